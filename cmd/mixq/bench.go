package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/backend"
	"github.com/mixq/mixq/bench"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/quant"
)

func newBenchCmd() *cobra.Command {
	var quick, asJSON, gpuOnly bool
	var backendName string
	var models, shapes []string
	var matmulOnly bool
	var batches []int
	var gq gptqBenchFlags
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure kernel throughput per op and shape next to a memory-copy baseline",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			choice, err := backend.Parse(backendName)
			if err != nil || choice.Kind == "cuda-sim" {
				return usagef("--backend %q: want auto, cpu, cuda or cuda:N", backendName)
			}
			if gpuOnly && choice.Kind == "cpu" {
				return usagef("--gpu-only needs --backend auto or cuda")
			}
			if gpuOnly && len(models) > 0 {
				return usagef("--model measures the CPU forward pass: not with --gpu-only")
			}
			for _, dir := range models {
				ck, err := mixq.Open(dir)
				if err != nil {
					return quant.InputError(fmt.Errorf("--model %s: %w", dir, err))
				}
				ck.Close()
			}
			var shs []bench.Shape
			for _, s := range shapes {
				var sh bench.Shape
				if n, err := fmt.Sscanf(s, "%dx%d", &sh.Rows, &sh.Cols); err != nil || n != 2 || sh.Rows < 1 || sh.Cols < 1 || fmt.Sprintf("%dx%d", sh.Rows, sh.Cols) != s {
					return usagef("--shape %q: want ROWSxCOLS, say 4096x4096", s)
				}
				shs = append(shs, sh)
			}
			for _, b := range batches {
				if b < 1 || b > 4096 {
					return usagef("--batch %d: want 1 to 4096 rows of x", b)
				}
			}
			var rows []bench.Row
			if gq.on {
				if gpuOnly || matmulOnly || len(models) > 0 || len(shapes) > 0 {
					return usagef("--gptq measures only the GPTQ rows: not with --gpu-only, --matmul-only, --model or --shape")
				}
				o, err := gq.options()
				if err != nil {
					return err
				}
				if rows, err = gq.run(c, o); err != nil {
					return err
				}
			} else if !gpuOnly {
				be := cpu.New(0)
				if rows, err = bench.Run(bench.Options{Quick: quick, Backends: []quant.Backend{be}, Shapes: shs, MatMulOnly: matmulOnly, Batches: batches}); err != nil {
					return err
				}
				if !matmulOnly {
					ev, err := bench.EvalRows(be, quick)
					if err != nil {
						return err
					}
					rows = append(rows, ev...)
				}
				for _, dir := range models {
					ev, err := bench.EvalModelRows(be, dir, filepath.Base(filepath.Clean(dir)), quick)
					if err != nil {
						return fmt.Errorf("--model %s: %w", dir, err)
					}
					rows = append(rows, ev...)
				}
			}
			if choice.Kind != "cpu" && !gq.on {
				g, err := gpuRows(choice, quick)
				switch {
				case err != nil && choice.Kind == "cuda":
					return quant.InputError(fmt.Errorf("--backend cuda: %w", err))
				case err != nil:
					fmt.Fprintf(c.ErrOrStderr(), "mixq: no GPU rows: %v\n", err)
				}
				rows = append(rows, g...)
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), rows)
			}
			tw := newTable(c.OutOrStdout())
			fmt.Fprintln(tw, "BACKEND\tOP\tPRECISION\tSHAPE\tMEDIAN\tGB/S\tVS COPY\tTOKENS/S\tNOTE")
			for _, r := range rows {
				switch {
				case r.TokensPerSec > 0:
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f ms\t-\t-\t%.0f\t\n", r.Backend, r.Op, dash(r.Precision), r.Shape, 1e3*r.Seconds, r.TokensPerSec)
				case r.VsRTN > 0:
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.3f\t-\t-\t%.1fx rtn; %s\n", r.Backend, r.Op, dash(r.Precision), r.Shape, seconds(r.Seconds), r.GBps, r.VsRTN, r.Note)
				case r.Seconds == 0:
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t%s\n", r.Backend, r.Op, dash(r.Precision), r.Shape, r.Note)
				default:
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f ms\t%.2f\t%s\t-\t%s\n", r.Backend, r.Op, dash(r.Precision), r.Shape, 1e3*r.Seconds, r.GBps, ratio(r.VsCopy), gpuNote(r))
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&quick, "quick", false, "one shape, short budgets")
	c.Flags().BoolVar(&gpuOnly, "gpu-only", false, "only the GPU rows")
	c.Flags().StringVar(&backendName, "backend", "auto", "GPU rows: auto (when a GPU is usable), cpu (none), cuda or cuda:N (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringArrayVar(&shapes, "shape", nil, "weight shape ROWSxCOLS of the kernel rows instead of the defaults (repeatable)")
	c.Flags().IntSliceVar(&batches, "batch", nil, "rows of x of the matmul rows (default 1,16; 1 with --quick)")
	c.Flags().BoolVar(&matmulOnly, "matmul-only", false, "only the memcpy baseline, the F32 anchor and the quantized matmuls (no eval rows unless --model)")
	gq.register(c)
	c.Flags().StringArrayVar(&models, "model", nil, "also time the forward pass (tokens/s) of this checkpoint directory, as stored and quantized (repeatable)")
	return c
}

// gpuRows runs the CUDA plugin's benchmarks on the chosen device.
func gpuRows(choice backend.Choice, quick bool) ([]bench.Row, error) {
	p, err := backend.CUDAPlugin()
	if err != nil {
		return nil, err
	}
	g, err := p.Bench(gpu.BenchOptions{Ordinal: choice.Ordinal, Quick: quick})
	if err != nil {
		return nil, err
	}
	return bench.GPURows(fmt.Sprintf("cuda:%d", choice.Ordinal), g), nil
}

func ratio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

// gpuNote says how a GPU row compares with its floor and baseline.
func gpuNote(r bench.Row) string {
	var parts []string
	if r.VsF32 > 0 && r.VsF32 != 1 {
		parts = append(parts, fmt.Sprintf("%.2fx f32", r.VsF32))
	}
	if r.FloorSeconds > 0 && r.VsCopy != 1 {
		parts = append(parts, fmt.Sprintf("floor %.3f ms", 1e3*r.FloorSeconds))
	}
	if r.Speedup > 0 {
		parts = append(parts, fmt.Sprintf("%.2fx cuBLAS", r.Speedup))
	}
	if r.Note != "" {
		parts = append(parts, r.Note)
	}
	return strings.Join(parts, "; ")
}
