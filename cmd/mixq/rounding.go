package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/gptq"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// roundingFlags choose how quantize picks INT8/INT4 scales and codes.
type roundingFlags struct {
	mode string
	// preset is set under --preset, where auto without calibration tokens
	// means search (see presets.go).
	preset bool
}

const roundingHelp = `how INT8/INT4 scales and codes are chosen, inside the same format:
rtn (absmax round to nearest), search (per-group clipping search, weighted by
E[x²] from --calib files when given), gptq (error feedback with the second
moment of each layer's inputs, layer by layer, from --calib-tokens or
--calib-sample; with searched scales), auto (gptq when calibration tokens are
given, else search when --calib files are, else rtn)`

func (f *roundingFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.mode, "rounding", "auto", roundingHelp)
}

// resolve turns auto into the best method the calibration allows.
func (f *roundingFlags) resolve(imp *importanceFlags) (string, error) {
	tokens := imp.calibTokens != "" || imp.calibSample > 0
	switch f.mode {
	case "auto":
		switch {
		case tokens:
			return "gptq", nil
		case len(imp.calib) > 0, f.preset:
			return "search", nil
		}
		return "rtn", nil
	case "rtn", "search":
		return f.mode, nil
	case "gptq":
		if !tokens {
			return "", usagef("--rounding gptq needs calibration tokens: --calib-tokens F.json or --calib-sample N")
		}
		return f.mode, nil
	}
	return "", usagef("--rounding %q: want rtn, search, gptq or auto", f.mode)
}

// rounder prepares the Rounder of the planned quantization: nil for rtn;
// for gptq it runs the sequential calibration and quantization (on the
// CPU, whatever --backend says, so that the bytes do not depend on it).
func (f *roundingFlags) rounder(c *cobra.Command, path string, p *planned, imp *importanceFlags) (mixq.Rounder, error) {
	mode, err := f.resolve(imp)
	if err != nil {
		return nil, err
	}
	stderr := c.ErrOrStderr()
	switch mode {
	case "rtn":
		return nil, nil
	case "search":
		r := &gptq.Rounder{Search: true, Diag: map[string][]float64{}}
		if len(imp.calib) > 0 {
			st, err := importance.Read(imp.calib, cpu.New(0))
			if err != nil {
				return nil, err
			}
			for i := range p.plan.Items {
				name := p.plan.Items[i].Input.Name
				if strings.Contains(name, "embed_tokens") {
					continue // looked up, not multiplied: no input statistics apply
				}
				if d := st.SecondMoment(importance.LayerName(name)); d != nil {
					r.Diag[name] = d
				}
			}
		}
		return r, nil
	}
	m, err := model.Load(path, cpu.New(0))
	if err != nil {
		return nil, fmt.Errorf("--rounding gptq runs the built-in forward pass: %w", err)
	}
	defer m.Close()
	tf := tokenFlags{tokens: imp.calibTokens, sample: imp.calibSample, seqLen: imp.calibSeqLen, seed: imp.calibSeed}
	seqs, err := tf.sequences(c.Context(), m, 1, stderr)
	if err != nil {
		return nil, err
	}
	targets := map[string]quant.Layout{}
	for i := range p.plan.Items {
		it := &p.plan.Items[i]
		if !it.Decision.Keep && it.Decision.Precision.Quantized() {
			targets[it.Input.Name] = it.Layout
		}
	}
	bar := &stepBar{w: stderr, what: "gptq", unit: "layer runs"}
	// The bar counts layer runs; within one, a large matrix's
	// factorisation and rows can take minutes, so the description shows
	// the GPTQ work done as it goes (gptq.Options.Progress is called one
	// call at a time).
	var work int64
	res, err := gptq.Sequential(c.Context(), m, seqs, gptq.CalibOptions{
		Options: gptq.Options{Search: true, Progress: func(units int64) {
			work += units
			bar.describe(fmt.Sprintf("gptq (%.3g multiply-adds)", float64(work)))
		}},
		Target:   func(name string) (quant.Layout, bool) { l, ok := targets[name]; return l, ok },
		Notice:   func(s string) { fmt.Fprintf(stderr, "mixq: notice: gptq: %s\n", s) },
		Progress: bar.step,
	})
	bar.end(err)
	if err != nil {
		return nil, err
	}
	summarize(stderr, res)
	return &gptq.Rounder{Results: res, Search: true}, nil
}

// summarize prints one line: how many matrices and rows each method won,
// and the total proxy loss against round to nearest.
func summarize(w io.Writer, res map[string]*gptq.Rounded) {
	var rows [3]int
	var loss, rtn float64
	for _, r := range res {
		for i, n := range r.Method {
			rows[i] += n
		}
		loss += r.Loss
		rtn += r.LossRTN
	}
	ratio := ""
	if rtn > 0 {
		ratio = fmt.Sprintf(", proxy loss %.3g of round to nearest's", loss/rtn)
	}
	fmt.Fprintf(w, "mixq: gptq: %d matrices; rows by method: gptq %d, search %d, rtn %d%s\n",
		len(res), rows[gptq.GPTQ], rows[gptq.Search], rows[gptq.RTN], ratio)
}
