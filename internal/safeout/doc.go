// Package safeout writes a command's outputs so that a mistake, a kill or a
// full disk never costs the user a file that mixq did not write.
//
// The rules, which every command follows through this package:
//
//   - An output may not be, contain, or lie inside any of the command's
//     inputs, comparing real paths (symlinks resolved) and, for existing
//     files, file identity (hard links). See Check.
//   - An existing output is replaced only with --force, and only when it is
//     something mixq wrote: a directory whose marker file (MarkerName)
//     names the same kind of output (checkpoint or report) and lists
//     exactly the files the directory holds, with their sizes, so that a
//     file the user added or changed since makes it theirs again; or a
//     single regular file with the kind's extension and first bytes that
//     carries mixq's mark, the user.mixq extended attribute set on every
//     file mixq writes (a file system without user attributes means --force
//     never replaces a single file there). A directory without the marker
//     is never deleted, whatever the flags.
//   - Everything is written under a temporary name in the destination's own
//     directory (the same file system, so the final rename is atomic) and put
//     in place only when complete. A directory replaces its predecessor with
//     one atomic exchange (Linux renameat2 RENAME_EXCHANGE), so at every
//     instant the output path holds either the old output or the new one;
//     where the exchange is unsupported the old directory is moved aside
//     under a recoverable name first.
//   - Temporary names carry the writer's pid: ".NAME.mixq-tmp-PID-RANDOM"
//     (and ".NAME.mixq-old-PID-RANDOM" for an output moved aside), and the
//     writer holds a flock on each while it runs. Whoever next writes into
//     the same directory removes those whose process is gone and whose
//     lock is free (a pid can be gone here and alive in another pid
//     namespace), restores a moved-aside output whose replacement never
//     arrived, and says so through Notice. That is the only cleanup
//     possible after a SIGKILL, which no process can catch.
//   - A new output is renamed into place with RENAME_NOREPLACE, so of two
//     runs into one new path without --force, the second fails instead of
//     silently replacing the first.
package safeout
