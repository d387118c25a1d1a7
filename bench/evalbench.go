package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/model"
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
	in, out := filepath.Join(work, "in"), filepath.Join(work, "q")
	if err := synth.Write(in, synth.Options{Preset: p, Seed: 1}); err != nil {
		return nil, err
	}
	ck, err := mixq.Open(in)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	if err != nil {
		return nil, err
	}
	if _, err := mixq.Quantize(context.Background(), ck, plan, out, mixq.Options{Backend: be}); err != nil {
		return nil, err
	}
	batch, prefill, decode := 4, 64, 32
	if quick {
		batch, prefill, decode = 2, 32, 8
	}
	shape := fmt.Sprintf("seed/2 layers b%d", batch)
	var rows []Row
	for _, v := range []struct{ prec, path string }{{"bf16", in}, {"static", out}} {
		m, err := model.Load(v.path, be)
		if err != nil {
			return nil, err
		}
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
			m.Close()
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
				m.Close()
				return nil, err
			}
		}
		dec := time.Since(t0).Seconds()
		m.Close()
		rows = append(rows,
			Row{Backend: be.Name(), Op: fmt.Sprintf("eval prefill %d", prefill), Shape: shape, Precision: v.prec, Seconds: pre, TokensPerSec: float64(batch*prefill) / pre},
			Row{Backend: be.Name(), Op: "eval decode", Shape: shape, Precision: v.prec, Seconds: dec / float64(decode), TokensPerSec: float64(batch*decode) / dec},
		)
	}
	return rows, nil
}
