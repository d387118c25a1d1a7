package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func inspectJSON(t *testing.T, dir string) inspectReport {
	t.Helper()
	code, stdout, stderr := runCLI(t, "inspect", dir, "--json")
	require.Equal(t, 0, code, stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	return rep
}

// modelBytes is what quantize --json wrote less the carried files: the
// model's own bytes, which size targets are about.
func modelBytes(t *testing.T, stdout string) int64 {
	t.Helper()
	var res struct {
		WrittenBytes int64 `json:"written_bytes"`
		Estimate     struct {
			CarriedBytes int64 `json:"carried_bytes"`
		} `json:"estimate"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	return res.WrittenBytes - res.Estimate.CarriedBytes
}

func TestPresetsAreListedAndChecked(t *testing.T) {
	_, stdout, _ := runCLI(t, "quantize", "--help")
	for _, p := range presets {
		assert.Contains(t, stdout, p.name+": ", "--help lists preset %s", p.name)
	}
	in := stories(t)
	for _, args := range [][]string{
		{"--preset", "q4_k_m"},
		{"--preset", "int4", "--group-size", "64"},
		{"--preset", "mixed-6x", "--policy", "dynamic"},
		{"--preset", "mixed-6x", "--target-ratio", "5"},
		{"--preset", "int8", "--group-sizes", "32"},
	} {
		out := filepath.Join(t.TempDir(), "q")
		code, _, stderr := runCLI(t, append([]string{"quantize", in, "-o", out}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "--preset")
		assert.NotContains(t, stderr, "panic")
		assert.NotContains(t, stderr, "goroutine ")
		assert.NoDirExists(t, out)
	}
}

// --preset int4 is every matrix INT4 in groups of 32, rounded by the scale
// search when there is no calibration: the same bytes as the flags it
// stands for.
func TestPresetInt4(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "quantize", in, "-o", filepath.Join(dir, "p"), "--preset", "int4")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "quantize", in, "-o", filepath.Join(dir, "f"), "--rule", ".=int4", "--group-size", "32", "--rounding", "search")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, dirSums(t, filepath.Join(dir, "f"))["model.safetensors"], dirSums(t, filepath.Join(dir, "p"))["model.safetensors"])
	for _, tt := range inspectJSON(t, filepath.Join(dir, "p")).Tensors {
		if len(tt.Shape) == 2 {
			assert.Equal(t, "int4", tt.Precision, tt.Name)
			assert.Equal(t, 32, tt.GroupSize, tt.Name)
		}
	}
}

// A budget preset reaches its size with group sizes from its candidates, and
// the output reads back: eval decodes it.
func TestPresetBudgetReachesItsSize(t *testing.T) {
	in := stories(t)
	out := filepath.Join(t.TempDir(), "b")
	code, stdout, stderr := runCLI(t, "quantize", in, "-o", out, "--preset", "mixed-6x", "--calib-sample", "2", "--calib-seq-len", "32", "--json")
	require.Equal(t, 0, code, stderr)
	model := float64(modelBytes(t, stdout))
	target := float64(4*260032) / 6
	assert.LessOrEqual(t, model, target)
	assert.GreaterOrEqual(t, model, 0.995*target)
	groups := map[int]int{}
	for _, tt := range inspectJSON(t, out).Tensors {
		if tt.Precision == "int4" || tt.Precision == "int8" {
			groups[tt.GroupSize]++
		}
	}
	t.Logf("group sizes chosen: %v", groups)
	for g := range groups {
		assert.Contains(t, []int{32, 64, 128}, g)
	}
	code, _, stderr = runCLI(t, "eval", "--model", in, "--quantized", out, "--tokens", filepath.Join(in, "reference.json"))
	require.Equal(t, 0, code, stderr)
}

func TestSensitivityFlag(t *testing.T) {
	in := stories(t)
	for _, args := range [][]string{
		{"--policy", "budget", "--target-ratio", "5", "--sensitivity", "exact"},
		{"--policy", "budget", "--target-ratio", "5", "--sensitivity", "kl"}, // no calibration tokens
	} {
		out := filepath.Join(t.TempDir(), "q")
		code, _, stderr := runCLI(t, append([]string{"quantize", in, "-o", out}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "--sensitivity")
		assert.NotContains(t, stderr, "panic")
		assert.NoDirExists(t, out)
	}
	// With calibration tokens the report carries the measured KL of every
	// matrix; with --sensitivity proxy it does not.
	for _, mode := range []string{"auto", "proxy"} {
		out := filepath.Join(t.TempDir(), "q")
		code, _, stderr := runCLI(t, "quantize", in, "-o", out, "--policy", "dynamic", "--calib-sample", "2", "--calib-seq-len", "32", "--sensitivity", mode)
		require.Equal(t, 0, code, stderr)
		raw, err := os.ReadFile(filepath.Join(out+".report", "report.json"))
		require.NoError(t, err)
		var rep struct {
			Tensors []struct {
				Matrix     bool    `json:"matrix"`
				MeasuredKL float64 `json:"measured_kl"`
			} `json:"tensors"`
		}
		require.NoError(t, json.Unmarshal(raw, &rep))
		for _, tt := range rep.Tensors {
			if tt.Matrix && mode == "auto" {
				assert.Positive(t, tt.MeasuredKL)
			} else {
				assert.Zero(t, tt.MeasuredKL)
			}
		}
	}
}

// Under --policy budget the group sizes are chosen from --group-sizes
// (default 32,64,128); --group-size alone restricts the choice to it; a bad
// list is a usage error.
func TestBudgetGroupSizesFlag(t *testing.T) {
	in := stories(t)
	out := filepath.Join(t.TempDir(), "b")
	code, _, stderr := runCLI(t, "quantize", in, "-o", out, "--policy", "budget", "--target-bpw", "6", "--group-size", "64")
	require.Equal(t, 0, code, stderr)
	for _, tt := range inspectJSON(t, out).Tensors {
		if tt.GroupSize > 0 {
			assert.Equal(t, 64, tt.GroupSize, tt.Name)
		}
	}
	// --group-sizes without the plan's group size: that size is measured
	// (for the report) but never chosen.
	out = filepath.Join(t.TempDir(), "b32")
	code, _, stderr = runCLI(t, "quantize", in, "-o", out, "--policy", "budget", "--target-bpw", "6", "--group-sizes", "16")
	require.Equal(t, 0, code, stderr)
	n := 0
	for _, tt := range inspectJSON(t, out).Tensors {
		if tt.GroupSize > 0 {
			assert.Equal(t, 16, tt.GroupSize, tt.Name)
			n++
		}
	}
	assert.Positive(t, n)
	for _, bad := range []string{"32,x", "0", "32,,64", "99999"} {
		out := filepath.Join(t.TempDir(), "b")
		code, _, stderr := runCLI(t, "quantize", in, "-o", out, "--policy", "budget", "--target-bpw", "6", "--group-sizes", bad)
		assert.Equal(t, 2, code, "%s: %s", bad, stderr)
		assert.Contains(t, stderr, "--group-sizes")
		assert.NotContains(t, stderr, "panic")
	}
	code, _, stderr = runCLI(t, "quantize", in, "-o", filepath.Join(t.TempDir(), "s"), "--group-sizes", "32")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "--group-sizes ignored")
}
