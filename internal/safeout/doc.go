// Package safeout writes a command's outputs so that a mistake, a kill or a
// full disk never costs the user a file that mixq did not write.
//
// The rules, which every command follows through this package:
//
//   - An output may not be, contain, or lie inside any of the command's
//     inputs, comparing real paths (symlinks resolved) and, for existing
//     files, file identity (hard links). See Check.
//   - An existing output is replaced only with --force, and only when it is
//     something mixq wrote: a directory holding mixq's marker file
//     (MarkerName), or a single regular file of the kind the command writes
//     (its extension and a look at its first bytes). A directory without the
//     marker is never deleted, whatever the flags.
//   - Everything is written under a temporary name in the destination's own
//     directory (the same file system, so the final rename is atomic) and put
//     in place only when complete. A directory replaces its predecessor with
//     one atomic exchange (Linux renameat2 RENAME_EXCHANGE), so at every
//     instant the output path holds either the old output or the new one;
//     where the exchange is unsupported the old directory is moved aside
//     under a recoverable name first.
//   - Temporary names carry the writer's pid: ".NAME.mixq-tmp-PID-RANDOM"
//     (and ".NAME.mixq-old-PID-RANDOM" for an output moved aside). Whoever
//     next writes into the same directory removes those whose process is
//     gone, restores a moved-aside output whose replacement never arrived,
//     and says so through Notice. That is the only cleanup possible after a
//     SIGKILL, which no process can catch.
package safeout
