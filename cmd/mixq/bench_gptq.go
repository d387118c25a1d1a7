package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/bench"
)

// gptqBenchFlags select `mixq bench --gptq`: GPTQ on one Llama-7B-shaped
// decoder layer, with its round-to-nearest anchor (bench.GPTQLayer).
type gptqBenchFlags struct {
	on     bool
	shape  string
	tokens int
	group  int
}

func (f *gptqBenchFlags) register(c *cobra.Command) {
	c.Flags().BoolVar(&f.on, "gptq", false, "instead of the kernel rows: GPTQ (INT4, searched scales) on the 7 linears of one decoder layer from synthetic activations, next to round to nearest of the same matrices, and the peak RSS (minutes on 2 cores at the default Llama-7B shape)")
	c.Flags().StringVar(&f.shape, "gptq-shape", "4096x11008", "the layer's HIDDENxMLP sizes for --gptq")
	c.Flags().IntVar(&f.tokens, "gptq-tokens", 2048, "synthetic calibration tokens per input for --gptq")
	c.Flags().IntVar(&f.group, "gptq-group", 128, "group size for --gptq (32, 64, 128, ...)")
}

// options validates the flags (usage errors, exit 2).
func (f *gptqBenchFlags) options() (bench.GPTQOptions, error) {
	var o bench.GPTQOptions
	if n, err := fmt.Sscanf(f.shape, "%dx%d", &o.Hidden, &o.MLP); err != nil || n != 2 || o.Hidden < 1 || o.MLP < 1 || fmt.Sprintf("%dx%d", o.Hidden, o.MLP) != f.shape {
		return o, usagef("--gptq-shape %q: want HIDDENxMLP, say 4096x11008", f.shape)
	}
	if f.tokens < 1 || f.tokens > 1<<22 {
		return o, usagef("--gptq-tokens %d: want 1 to %d", f.tokens, 1<<22)
	}
	if f.group < 1 || f.group > o.Hidden && f.group > o.MLP {
		return o, usagef("--gptq-group %d: want 1 to the larger of the layer's sizes", f.group)
	}
	o.Tokens, o.GroupSize = f.tokens, f.group
	return o, nil
}

// run measures the GPTQ rows, with a progress bar (rate and ETA, in
// millions of multiply-adds) on a terminal; it stops with c's context.
func (f *gptqBenchFlags) run(c *cobra.Command, o bench.GPTQOptions) ([]bench.Row, error) {
	stderr := c.ErrOrStderr()
	total := bench.GPTQWork(o)
	bar := newCounter(stderr, total/1e6, "gptq layer", "M mult-adds")
	var mu sync.Mutex
	var carry int64
	o.Progress = func(n int64) {
		mu.Lock()
		carry += n
		m := carry / 1e6
		carry -= m * 1e6
		mu.Unlock()
		bar.add(int(m))
	}
	o.Notice = func(s string) { noticeLine(stderr, s) }
	rows, err := bench.GPTQLayer(c.Context(), o)
	bar.end(err)
	return rows, err
}

func noticeLine(w io.Writer, s string) { fmt.Fprintf(w, "mixq: notice: gptq: %s\n", s) }

// seconds prints a duration in ms below a second, else in s.
func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.3f ms", 1e3*s)
	}
	return fmt.Sprintf("%.2f s", s)
}
