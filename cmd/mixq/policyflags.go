package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
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
}

func (f *planFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.IntVar(&f.groupSize, "group-size", quant.DefaultGroupSize, "elements per quantization group along each row")
	fl.StringVar(&f.rulesFile, "rules", "", "JSON file of rules {\"rules\":[{\"pattern\":REGEX,\"precision\":P}]} placed before the built-in rules")
	fl.StringArrayVar(&f.rules, "rule", nil, "rule REGEX=PRECISION (f32|f16|int8|int4), repeatable; first match wins")
	fl.StringVar(&f.policy, "policy", "static", "precision policy: static")
	fl.StringVar(&f.maxShardSize, "max-shard-size", "5GB", "largest shard of the output (e.g. 500MB, 2GiB, or bytes)")
	fl.BoolVar(&f.explain, "explain", false, "show which rule chose each tensor")
}

// options turns the flags into pipeline options for a checkpoint.
func (f *planFlags) options(ck *checkpoint.Checkpoint) (mixq.Options, error) {
	var user []policy.Rule
	if f.rulesFile != "" {
		rs, err := policy.LoadRules(f.rulesFile)
		if err != nil {
			return mixq.Options{}, err
		}
		user = append(user, rs...)
	}
	for _, s := range f.rules {
		r, err := policy.ParseRule(s)
		if err != nil {
			return mixq.Options{}, err
		}
		user = append(user, r)
	}
	if f.policy != "static" {
		return mixq.Options{}, usagef("--policy %q: this build supports static", f.policy)
	}
	if f.groupSize < 1 || f.groupSize > quant.MaxGroupSize {
		return mixq.Options{}, usagef("--group-size %d: want 1..%d", f.groupSize, quant.MaxGroupSize)
	}
	shard, err := parseSize(f.maxShardSize)
	if err != nil {
		return mixq.Options{}, usagef("--max-shard-size: %v", err)
	}
	return mixq.Options{
		Policy:       mixq.StaticPolicy(ck, user),
		GroupSize:    f.groupSize,
		MaxShardSize: shard,
	}, nil
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
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return int64(v * float64(mult)), nil
}

// openBackend resolves --backend. This build has the CPU backend only, so
// auto means cpu.
func openBackend(name string) (quant.Backend, error) {
	switch name {
	case "auto", "cpu":
		return cpu.New(0), nil
	}
	return nil, usagef("--backend %q: want auto or cpu", name)
}

// plan opens a checkpoint and plans its quantization from the flags,
// printing --explain to stderr. The caller closes the checkpoint.
func (f *planFlags) plan(c *cobra.Command, path string) (*checkpoint.Checkpoint, mixq.Options, *qformat.Plan, error) {
	ck, err := mixq.Open(path)
	if err != nil {
		return nil, mixq.Options{}, nil, err
	}
	opt, err := f.options(ck)
	if err == nil {
		var plan *qformat.Plan
		if plan, err = mixq.PlanQuantization(ck, opt); err == nil {
			if f.explain {
				printExplain(c.ErrOrStderr(), plan)
			}
			return ck, opt, plan, nil
		}
	}
	ck.Close()
	return nil, mixq.Options{}, nil, err
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
