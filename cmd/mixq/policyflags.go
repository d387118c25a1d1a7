package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/backend"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// planFlags are the flags shared by quantize and estimate.
type planFlags struct {
	groupSize    int
	rulesFile    string
	rules        []string
	policy       string
	maxShardSize string
	explain      bool
	backend      string
	imp          importanceFlags
	highRatio    float64
	lowRatio     float64
	targetRatio  float64
	targetBPW    float64
	// headersOnly is set by commands that only plan (estimate): with the
	// static policy they need no backend.
	headersOnly bool
	// userRules are --rules and --rule as options parsed them, for the
	// warnings once the plan is made.
	userRules []policy.Rule
	// groupSizes is --group-sizes: the budget's candidate group sizes.
	groupSizes string
	// preset is --preset; applyPreset sets the flags it fixes and the
	// rule of a uniform preset (presetRules, after the user's).
	preset      string
	presetRules []policy.Rule
	// rounding is quantize's --rounding (nil in estimate, which has none
	// and plans as auto would): the budget measures its candidates with
	// the rounding that will be applied.
	rounding *roundingFlags
}

// defaultGroupSizes are the budget's candidate group sizes unless
// --group-size or --group-sizes says otherwise.
const defaultGroupSizes = "32,64,128"

func (f *planFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.IntVar(&f.groupSize, "group-size", quant.DefaultGroupSize, "elements per quantization group along each row")
	fl.StringVar(&f.rulesFile, "rules", "", "JSON file of rules {\"rules\":[{\"pattern\":REGEX,\"precision\":P}]} placed before the built-in rules")
	fl.StringArrayVar(&f.rules, "rule", nil, "rule REGEX=PRECISION (f32|f16|int8|int4), repeatable; first match wins")
	fl.StringVar(&f.policy, "policy", "static", "precision policy: static (component rules), dynamic (importance ranks) or budget (least error for a size)")
	fl.StringVar(&f.maxShardSize, "max-shard-size", "5GB", "largest shard of the output (e.g. 500MB, 2GiB, or bytes)")
	fl.BoolVar(&f.explain, "explain", false, "show which rule or policy chose each tensor")
	fl.StringVar(&f.backend, "backend", "auto", backendHelp)
	fl.Float64Var(&f.highRatio, "high-ratio", importance.DefaultHigh, "dynamic: share of ranked tensors kept in F16")
	fl.Float64Var(&f.lowRatio, "low-ratio", importance.DefaultLow, "dynamic: share of ranked tensors in INT4")
	fl.Float64Var(&f.targetRatio, "target-ratio", 0, "budget: compression versus FP32 to reach, at least 1 (e.g. 6); estimate: also the target it is compared with")
	fl.Float64Var(&f.targetBPW, "target-bpw", 0, "budget: bits per weight to reach, counting every byte of the model's files (at most 32)")
	fl.StringVar(&f.groupSizes, "group-sizes", defaultGroupSizes, "budget: group sizes each INT8/INT4 matrix chooses from, per tensor, for the least predicted damage (--group-size N alone restricts it to N; multiples of 32 export to GGUF's Q4_0/Q8_0 exactly)")
	fl.StringVar(&f.preset, "preset", "", presetHelp())
	f.imp.register(c)
}

// checkTargets refuses size targets that mean nothing: a compression ratio
// below 1 (an output larger than FP32) and bits per weight outside (0, 32].
func (f *planFlags) checkTargets() error {
	if f.targetRatio != 0 && !(f.targetRatio >= 1 && !math.IsInf(f.targetRatio, 0)) {
		return usagef("--target-ratio %v: want a compression ratio versus FP32 of at least 1 (6 means six times smaller than FP32)", f.targetRatio)
	}
	if f.targetBPW != 0 && !(f.targetBPW > 0 && f.targetBPW <= 32) {
		return usagef("--target-bpw %v: want bits per weight in (0, 32] (FP32 is 32)", f.targetBPW)
	}
	if f.targetRatio != 0 && f.targetBPW != 0 {
		return usagef("give --target-ratio or --target-bpw, not both")
	}
	return nil
}

// Flags that only some policies read.
var (
	calibFlags     = []string{"calib", "calib-tokens", "calib-sample", "calib-seq-len", "calib-seed"}
	importanceOnly = []string{"grads", "signal-weights", "sensitivity"}
	dynamicOnly    = []string{"high-ratio", "low-ratio"}
	budgetOnly     = []string{"target-ratio", "target-bpw", "group-sizes"}
)

// warnIgnored warns, on stderr, about every flag given that the chosen
// policy does not read. In estimate --target-ratio and --target-bpw are
// also the target the size is compared with, so they are never ignored
// there; in quantize the calibration flags also feed --rounding (all but
// rtn), whatever the policy.
func (f *planFlags) warnIgnored(c *cobra.Command) {
	fl := c.Flags()
	warn := func(format string, args ...any) {
		fmt.Fprintf(c.ErrOrStderr(), "mixq: warning: "+format+"\n", args...)
	}
	given := func(names []string) []string {
		var out []string
		for _, n := range names {
			if fl.Changed(n) {
				out = append(out, "--"+n)
			}
		}
		return out
	}
	list := func(names []string) string { return strings.Join(names, ", ") }
	rounding := fl.Lookup("rounding")
	calibRead := f.policy != "static" || (rounding != nil && rounding.Value.String() != "rtn")
	ignored := given(importanceOnly)
	if !calibRead {
		ignored = append(given(calibFlags), ignored...)
	}
	if f.policy == "static" && len(ignored) > 0 {
		warn("%s ignored: --policy static does not use importance (it is for --policy dynamic or budget)", list(ignored))
	}
	if g := given(dynamicOnly); f.policy != "dynamic" && len(g) > 0 {
		warn("%s ignored: only --policy dynamic reads it, not --policy %s", list(g), f.policy)
	}
	if g := given(budgetOnly); f.policy != "budget" && c.Name() != "estimate" && len(g) > 0 {
		warn("%s ignored: --policy %s does not aim at a size (use --policy budget to reach one)", list(g), f.policy)
	}
	if f.imp.calibSample == 0 && calibRead {
		if g := given([]string{"calib-seq-len", "calib-seed"}); len(g) > 0 {
			warn("%s ignored without --calib-sample", list(g))
		}
	}
}

// options turns the flags into pipeline options for a checkpoint. For the
// dynamic and budget policies it runs the importance analysis first, which
// reads tensor data, shows its progress on a terminal and stops when the
// command's context is done; the analysis is returned for the report.
func (f *planFlags) options(c *cobra.Command, ck *checkpoint.Checkpoint) (mixq.Options, *importance.Analysis, error) {
	ctx := c.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	stderr := c.ErrOrStderr()
	if err := f.applyPreset(c); err != nil {
		return mixq.Options{}, nil, err
	}
	switch f.policy {
	case "static", "dynamic", "budget":
	default:
		return mixq.Options{}, nil, usagef("--policy %q: want static, dynamic or budget", f.policy)
	}
	if err := f.checkTargets(); err != nil {
		return mixq.Options{}, nil, err
	}
	if f.policy == "budget" && f.targetRatio == 0 && f.targetBPW == 0 {
		return mixq.Options{}, nil, usagef("--policy budget needs --target-ratio R or --target-bpw B")
	}
	if f.policy == "static" && !c.Flags().Changed("policy") && f.preset == "" && c.Name() != "estimate" && (f.targetRatio != 0 || f.targetBPW != 0) {
		// No policy was chosen: the size asked for is the point, and the
		// default policy would silently miss it.
		return mixq.Options{}, nil, usagef("--target-ratio and --target-bpw need --policy budget (the default, static, does not aim at a size)")
	}
	if f.policy == "dynamic" {
		if h, l := f.highRatio, f.lowRatio; !(h >= 0 && h <= 1) || !(l >= 0 && l <= 1) || h+l > 1+1e-12 {
			return mixq.Options{}, nil, usagef("--high-ratio %v --low-ratio %v: want shares in [0, 1] that sum to at most 1", h, l)
		}
	}
	f.warnIgnored(c)
	var user []policy.Rule
	if f.rulesFile != "" {
		rs, err := policy.LoadRules(f.rulesFile)
		if err != nil {
			return mixq.Options{}, nil, err
		}
		user = append(user, rs...)
	}
	for _, s := range f.rules {
		r, err := policy.ParseRule(s)
		if err != nil {
			return mixq.Options{}, nil, err
		}
		user = append(user, r)
	}
	user = append(user, f.presetRules...)
	f.userRules = user
	if f.groupSize < 1 || f.groupSize > quant.MaxGroupSize {
		return mixq.Options{}, nil, usagef("--group-size %d: want 1..%d", f.groupSize, quant.MaxGroupSize)
	}
	shard, err := parseSize(f.maxShardSize)
	if err != nil {
		return mixq.Options{}, nil, usagef("--max-shard-size: %v", err)
	}
	// A static estimate reads headers alone and runs no kernel, so it
	// opens no backend (and prints no notice about one).
	var be quant.Backend
	if f.policy != "static" || !f.headersOnly {
		if be, err = openBackend(f.backend); err != nil {
			return mixq.Options{}, nil, err
		}
	}
	opt := mixq.Options{GroupSize: f.groupSize, MaxShardSize: shard, Backend: be, Notice: notice}
	if f.policy == "static" {
		opt.Policy = mixq.StaticPolicy(ck, user)
		return opt, nil, nil
	}
	var groups []int
	if f.policy == "budget" {
		gs := f.groupSizes
		if c.Flags().Changed("group-size") && !c.Flags().Changed("group-sizes") {
			gs = strconv.Itoa(f.groupSize)
		}
		if groups, err = parseGroupSizes(gs); err != nil {
			return opt, nil, err
		}
		for _, g := range groups {
			if g > quant.MaxGroupSize {
				return opt, nil, usagef("--group-sizes: group size %d is impossible: want 1..%d", g, quant.MaxGroupSize)
			}
		}
	}
	rf := f.rounding
	if rf == nil {
		rf = &roundingFlags{mode: "auto"}
	}
	rf.preset = f.preset != ""
	mode, err := rf.resolve(&f.imp)
	if err != nil {
		return opt, nil, err
	}
	a, err := f.imp.analyze(ctx, ck, be, f.groupSize, groups, mode != "rtn", stderr)
	if err != nil {
		return opt, nil, err
	}
	if f.policy == "dynamic" {
		d, err := importance.NewDynamic(a, user, f.highRatio, f.lowRatio)
		if err != nil {
			return opt, nil, usageError{err}
		}
		opt.Policy = d
		return opt, a, nil
	}
	var target int64
	if f.targetRatio > 0 {
		target, err = importance.RatioTarget(ck, f.targetRatio)
	} else {
		target, err = importance.BPWTarget(ck, f.targetBPW)
	}
	if err != nil {
		return opt, nil, usageError{err}
	}
	b, err := importance.NewBudgetContext(ctx, a, user, ck, target, shard)
	if err != nil {
		return opt, nil, err
	}
	opt.Policy = b
	return opt, a, nil
}

// parseSize reads 5GB, 500MB, 2GiB, 100kB or a plain byte count.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1},
	}
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	n := v * float64(mult)
	if err != nil || math.IsNaN(n) || n < 1 || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size of at least one byte", s)
	}
	return int64(n), nil
}

// notices receives one-line notices such as the CPU fallback of
// --backend auto (the command's stderr).
var notices io.Writer = os.Stderr

// backendHelp documents --backend for every command that has it.
const backendHelp = "compute backend: auto (a GPU when usable, else the CPU), cpu, cuda or cuda:N"

// openBackend resolves --backend (see package backend).
func openBackend(name string) (quant.Backend, error) {
	return backend.Open(name, notices)
}

// planned is a checkpoint with its plan.
type planned struct {
	ck       *checkpoint.Checkpoint
	opt      mixq.Options
	plan     *qformat.Plan
	analysis *importance.Analysis // nil for the static policy
}

// plan opens a checkpoint and plans its quantization from the flags,
// printing --explain to stderr. The caller closes p.ck.
func (f *planFlags) plan(c *cobra.Command, path string) (*planned, error) {
	ck, err := mixq.Open(path)
	if err != nil {
		return nil, err
	}
	// config.json is checked as eval checks it (for the architectures
	// package model runs) before any analysis, so that no output is
	// planned that eval would refuse.
	if err := model.CheckCheckpoint(ck); err != nil {
		ck.Close()
		return nil, err
	}
	p := &planned{ck: ck}
	if p.opt, p.analysis, err = f.options(c, ck); err == nil {
		if p.plan, err = mixq.PlanQuantization(ck, p.opt); err == nil {
			if f.explain {
				printExplain(c.ErrOrStderr(), p.plan)
			}
			f.warnPlan(c.ErrOrStderr(), ck, p.plan)
			return p, nil
		}
	}
	ck.Close()
	return nil, err
}

// report is the importance report of a planned quantization (nil for static).
func (p *planned) report() *importance.Report {
	if p.analysis == nil {
		return nil
	}
	return p.analysis.Report(p.opt.Policy.(importance.Policy))
}

// parseFloatDType reads an f32|f16|bf16 flag.
func parseFloatDType(flag, v string) (safetensors.DType, error) {
	dt := safetensors.DType(strings.ToUpper(v))
	switch dt {
	case safetensors.F32, safetensors.F16, safetensors.BF16:
		return dt, nil
	}
	return "", usagef("--%s %q: want f32, f16 or bf16", flag, v)
}
