package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 9, defect 9: words a user can act on.
func TestVersionAndExamples(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--version")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `^mixq \S+.* go1\.`, stdout)

	root := newRoot(&strings.Builder{}, &strings.Builder{})
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		assert.NotEmpty(t, c.Example, "mixq %s --help has an example", c.Name())
		assert.Contains(t, c.Example, "mixq "+c.Name(), "the example runs the command itself")
	}
}

func TestWarningsForFlagsThatDoNothing(t *testing.T) {
	in := stories(t)
	code, _, stderr := runCLI(t, "estimate", in, "--rule", "no_such_tensor=int4", "--rule", "norm=int8")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "warning: rule no_such_tensor=int4 (flag) matches no tensor")
	assert.Contains(t, stderr, "warning: rule norm=int8 (flag) matches 11 tensors but decides none")

	for _, g := range []string{"1", "7"} {
		code, _, stderr = runCLI(t, "estimate", in, "--group-size", g)
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "warning: --group-size "+g)
	}
	code, _, stderr = runCLI(t, "estimate", in, "--group-size", "1")
	assert.Contains(t, stderr, "larger than F16")
	code, _, stderr = runCLI(t, "estimate", in)
	require.Equal(t, 0, code)
	assert.NotContains(t, stderr, "warning", "the defaults draw no warning")
}

// The CPU-fallback notice comes only from commands that run kernels: a
// static estimate reads headers alone.
func TestBackendNoticeOnlyWhereKernelsRun(t *testing.T) {
	in := stories(t)
	code, _, stderr := runCLI(t, "estimate", in)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "backend")
	code, _, stderr = runCLI(t, "inspect", in)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "backend")
}
