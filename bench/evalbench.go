package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/synth"
)

// EvalRows measures forward-pass throughput in tokens/s on a synthetic
// model, as stored (BF16 widened to float32) and quantized with the static
// policy (INT4 experts through the backend's matmul): a prefill of a batch
// of sequences, then single-token decode steps through the KV cache.
func EvalRows(be quant.Backend, quick bool) ([]Row, error) {
	work, err := os.MkdirTemp("", "mixq-bench-eval")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	p, err := synth.Lookup("seed")
	if err != nil {
		return nil, err
	}
	p = p.WithLayers(2)
	in := filepath.Join(work, "in")
	if err := synth.Write(in, synth.Options{Preset: p, Seed: 1}); err != nil {
		return nil, err
	}
	return evalVariants(be, in, work, "seed/2 layers", "bf16", quick)
}

// EvalModelRows is EvalRows on the checkpoint directory dir (a real model,
// say minillama), labelled name: as stored (widened to float32), quantized
// with the static policy, and with every projection INT4.
func EvalModelRows(be quant.Backend, dir, name string, quick bool) ([]Row, error) {
	work, err := os.MkdirTemp("", "mixq-bench-eval")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	return evalVariants(be, dir, work, name, "stored", quick)
}

// evalVariants quantizes in under work (static policy; every projection
// INT4) and measures the forward pass of the input and of each output.
func evalVariants(be quant.Backend, in, work, name, stored string, quick bool) ([]Row, error) {
	ck, err := mixq.Open(in)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	int4, err := policy.ParseRule("proj=int4")
	if err != nil {
		return nil, err
	}
	variants := []struct {
		prec, path string
		pol        mixq.Policy
	}{{stored, in, nil}, {"static", filepath.Join(work, "static"), nil}, {"int4 proj", filepath.Join(work, "int4"), policy.NewStatic([]policy.Rule{int4})}}
	for _, v := range variants[1:] {
		plan, err := mixq.PlanQuantization(ck, mixq.Options{Policy: v.pol})
		if err != nil {
			return nil, err
		}
		if _, err := mixq.Quantize(context.Background(), ck, plan, v.path, mixq.Options{Policy: v.pol, Backend: be}); err != nil {
			return nil, err
		}
	}
	batch, prefill, decode := 4, 64, 32
	if quick {
		batch, prefill, decode = 2, 32, 8
	}
	shape := fmt.Sprintf("%s b%d", name, batch)
	var rows []Row
	for _, v := range variants {
		r, err := forwardRows(be, v.path, shape, v.prec, batch, prefill, decode)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// forwardRows loads the checkpoint at path and times a prefill of batch
// sequences of prefill tokens, then decode single-token steps, then the
// prefill again with activation statistics gathered (calibration).
func forwardRows(be quant.Backend, path, shape, prec string, batch, prefill, decode int) ([]Row, error) {
	m, err := model.Load(path, be)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	toks := make([][]int, batch)
	for b := range toks {
		toks[b] = make([]int, prefill)
		for i := range toks[b] {
			toks[b][i] = (b*7919 + i*104729) % m.Config.Vocab
		}
	}
	s := m.NewSession(batch, prefill+decode)
	t0 := time.Now()
	if _, err := s.Forward(toks, nil); err != nil {
		return nil, err
	}
	pre := time.Since(t0).Seconds()
	step := make([][]int, batch)
	t0 = time.Now()
	for i := 0; i < decode; i++ {
		for b := range step {
			step[b] = []int{(b + i) % m.Config.Vocab}
		}
		if _, err := s.Forward(step, nil); err != nil {
			return nil, err
		}
	}
	dec := time.Since(t0).Seconds()
	// Calibration: the same prefill on a fresh session, every linear
	// layer's input reduced to per-channel statistics on the way (what
	// `mixq calibrate --format stats` and the importance signals do).
	stats := map[string]*quant.Stats{}
	var serr error
	obs := func(weight string, x []float32, tokens, in int) {
		st := stats[weight]
		if st == nil {
			st = quant.NewStats(in)
			stats[weight] = st
		}
		if err := be.ChannelStats(st, x, tokens); err != nil && serr == nil {
			serr = err
		}
	}
	cs := m.NewSession(batch, prefill)
	t0 = time.Now()
	if _, err := cs.Forward(toks, obs); err != nil {
		return nil, err
	}
	cal := time.Since(t0).Seconds()
	if serr != nil {
		return nil, serr
	}
	return []Row{
		{Backend: be.Name(), Op: fmt.Sprintf("calibrate %d", prefill), Shape: shape, Precision: prec, Seconds: cal, TokensPerSec: float64(batch*prefill) / cal},
		{Backend: be.Name(), Op: fmt.Sprintf("eval prefill %d", prefill), Shape: shape, Precision: prec, Seconds: pre, TokensPerSec: float64(batch*prefill) / pre},
		{Backend: be.Name(), Op: "eval decode", Shape: shape, Precision: prec, Seconds: dec / float64(decode), TokensPerSec: float64(batch*decode) / dec},
	}, nil
}
