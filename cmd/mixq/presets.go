package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/policy"
)

// A preset is a name a user can type, as llama-quantize's types: it fixes
// the policy, the size and the group sizes. The rounding stays --rounding's
// (auto by default), except that without calibration tokens a preset uses
// the scale search instead of round to nearest: the best rounding that
// needs no calibration (on minillama INT4 g32 mean KL 0.0067 against
// 0.0073; see bench/QUALITY.md), where plain auto keeps round to nearest so
// that outputs made before --rounding existed keep their bytes.
type preset struct {
	name, summary string
	policy        string
	rule          string // a rule placed after the user's (uniform presets)
	groupSize     int    // 0: the flag's default
	ratio, bpw    float64
}

// presets, smallest last. The budget presets choose each matrix's
// precision and group size (32, 64 or 128) for the least measured error.
var presets = []preset{
	{name: "int8", summary: "every matrix INT8, group 128 (about 3.9× smaller than FP32)", policy: "static", rule: ".=int8", groupSize: 128},
	{name: "mixed-6x", summary: "budget: 6× smaller than FP32 (5.33 bits per weight), precision and group size per tensor", policy: "budget", ratio: 6},
	{name: "mixed-5bpw", summary: "budget: 5 bits per weight (6.4×)", policy: "budget", bpw: 5},
	{name: "int4", summary: "every matrix INT4, group 32 (about 7× smaller; 4.5 bits per weight, as Q4_0)", policy: "static", rule: ".=int4", groupSize: 32},
	{name: "mixed-4.5bpw", summary: "budget: 4.5 bits per weight (7.1×), the size of Q4_0", policy: "budget", bpw: 4.5},
}

func presetNames() []string {
	var out []string
	for _, p := range presets {
		out = append(out, p.name)
	}
	return out
}

// presetHelp lists the presets for --help.
func presetHelp() string {
	var b strings.Builder
	b.WriteString("named setting that fixes --policy, the size and the group sizes:")
	for _, p := range presets {
		fmt.Fprintf(&b, "\n%s: %s", p.name, p.summary)
	}
	b.WriteString("\n(rounding: gptq with --calib-tokens/--calib-sample, else scale search)")
	return b.String()
}

// applyPreset sets the flags a preset fixes. Flags it fixes may not be
// given as well: a preset is a promise of what the output is. Calling it
// again changes nothing (what it set does not count as given).
func (f *planFlags) applyPreset(c *cobra.Command) error {
	if f.preset == "" {
		return nil
	}
	i := slices.IndexFunc(presets, func(p preset) bool { return p.name == f.preset })
	if i < 0 {
		return usagef("--preset %q: want one of %s", f.preset, strings.Join(presetNames(), ", "))
	}
	p := presets[i]
	fixed := []string{"policy", "target-ratio", "target-bpw", "target", "group-sizes", "high-ratio", "low-ratio"}
	if p.groupSize != 0 {
		fixed = append(fixed, "group-size")
	}
	for _, n := range fixed {
		if fl := c.Flags().Lookup(n); fl != nil && fl.Changed {
			return usagef("--preset %s fixes --%s; drop one of them", p.name, n)
		}
	}
	if f.rounding != nil {
		f.rounding.preset = true // static presets never reach options' resolve
	}
	f.policy, f.targetRatio, f.targetBPW = p.policy, p.ratio, p.bpw
	if p.groupSize != 0 {
		f.groupSize = p.groupSize
	}
	if p.rule != "" {
		r, err := policy.ParseRule(p.rule)
		if err != nil {
			return err
		}
		r.Source = "preset " + p.name
		f.presetRules = []policy.Rule{r}
	}
	return nil
}

// parseGroupSizes reads "32,64,128".
func parseGroupSizes(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		g, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || g < 1 {
			return nil, usagef("--group-sizes %q: want positive group sizes separated by commas (e.g. 32,64,128)", s)
		}
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out, nil
}
