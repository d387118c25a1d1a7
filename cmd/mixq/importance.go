package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/charts"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// importanceFlags say where the importance signals come from.
type importanceFlags struct {
	calib       []string
	calibTokens string
	calibSample int
	calibSeqLen int
	calibSeed   uint64
	grads       string
	weights     string
	sensitivity string
}

const sensitivityHelp = `dynamic/budget: how each matrix's damage is predicted: kl (measure the KL
divergence of the model with that matrix alone at INT4, on up to 8 of the
calibration sequences, from its layer on: one partial forward pass per
matrix), proxy (importance-weighted relative error), auto (kl when
calibration tokens are given and it costs at most 10^12 multiply-adds)`

func (f *importanceFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringArrayVar(&f.calib, "calib", nil, "calibration file: activation dump or stats file from mixq calibrate (repeatable)")
	fl.StringVar(&f.calibTokens, "calib-tokens", "", "calibrate with the built-in forward pass on these tokens (JSON as for eval)")
	fl.IntVar(&f.calibSample, "calib-sample", 0, "calibrate with the built-in forward pass on N sequences sampled from the model")
	fl.IntVar(&f.calibSeqLen, "calib-seq-len", 128, "length of the sampled calibration sequences")
	fl.Uint64Var(&f.calibSeed, "calib-seed", 1, "seed of the sampled calibration sequences")
	fl.StringVar(&f.grads, "grads", "", "gradients safetensors file (accumulated |grad| or grad², same tensor names; see docs/IMPORTANCE.md)")
	fl.StringVar(&f.weights, "signal-weights", "weight=1,activation=1,gradient=1", "weights of the signals in the combined score")
	fl.StringVar(&f.sensitivity, "sensitivity", "auto", sensitivityHelp)
}

// parseWeights reads "weight=1,activation=2,gradient=0".
func parseWeights(s string) (map[importance.Signal]float64, error) {
	w := map[importance.Signal]float64{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, usagef("--signal-weights %q: want name=value pairs", s)
		}
		sig := importance.Signal(k)
		known := false
		for _, x := range importance.Signals {
			known = known || x == sig
		}
		x, err := strconv.ParseFloat(v, 64)
		if !known || err != nil || x < 0 {
			return nil, usagef("--signal-weights: %q is not a signal (weight, activation, gradient) with a non-negative weight", part)
		}
		w[sig] = x
	}
	return w, nil
}

// calibration gathers activation statistics from files and/or the built-in
// forward pass (with a progress bar on a terminal); nil when none was
// asked for. It stops when ctx is done.
func (f *importanceFlags) calibration(ctx context.Context, path string, be quant.Backend, stderr io.Writer) (*importance.CalibStats, error) {
	stats, _, err := f.calibrate(ctx, path, be, nil, stderr)
	return stats, err
}

// maxAutoSensitivityWork bounds the multiply-adds --sensitivity auto
// spends measuring KL sensitivities: about two to four minutes on two CPU
// cores (minillama's measurement is 3·10^11).
const maxAutoSensitivityWork = 1e12

// sensitivityRef is the reference candidate of a KL sensitivity
// measurement (nil: none).
type sensitivityRef struct {
	groupSize int
	search    bool
}

// calibrate is calibration that also measures the KL sensitivity of every
// matrix at ref when the built-in forward pass runs and ref is not nil.
func (f *importanceFlags) calibrate(ctx context.Context, path string, be quant.Backend, ref *sensitivityRef, stderr io.Writer) (*importance.CalibStats, *importance.Sensitivity, error) {
	var stats *importance.CalibStats
	if len(f.calib) > 0 {
		var total int64
		for _, p := range f.calib {
			if st, err := os.Stat(p); err == nil {
				total += st.Size()
			}
		}
		bar := newProgress(stderr, total, "read calibration")
		var progress func(int64)
		if bar != nil {
			progress = func(n int64) { bar.Add64(n) }
		}
		s, err := importance.ReadContext(ctx, f.calib, be, progress)
		if bar != nil {
			if err == nil {
				bar.Finish()
			} else {
				bar.Exit()
			}
		}
		if err != nil {
			return nil, nil, err
		}
		stats = s
	}
	if f.calibTokens == "" && f.calibSample == 0 {
		return stats, nil, nil
	}
	m, err := model.Load(path, be)
	if err != nil {
		return nil, nil, fmt.Errorf("built-in calibration: %w", err)
	}
	defer m.Close()
	tf := tokenFlags{tokens: f.calibTokens, sample: f.calibSample, seqLen: f.calibSeqLen, seed: f.calibSeed}
	seqs, err := tf.sequences(ctx, m, 1, stderr)
	if err != nil {
		return nil, nil, err
	}
	bar := newCounter(stderr, int64(eval.Tokens(seqs)), "calibrate", "tokens")
	s, err := importance.FromModelContext(ctx, m, seqs, be, bar.add)
	bar.end(err)
	if err != nil {
		return nil, nil, err
	}
	if stats == nil {
		stats = s
	} else if err := stats.Merge(s); err != nil {
		return nil, nil, err
	}
	if ref == nil {
		return stats, nil, nil
	}
	sseqs := seqs[:min(len(seqs), importance.DefaultSensitivitySequences)]
	if work := importance.SensitivityWork(m, sseqs); f.sensitivity == "auto" && work > maxAutoSensitivityWork {
		fmt.Fprintf(stderr, "mixq: notice: sensitivity: measuring every matrix's KL would take about %.3g multiply-adds (minutes per 10^12 on a CPU); losses are importance-weighted errors instead (--sensitivity kl measures anyway)\n", float64(work))
		return stats, nil, nil
	}
	sbar := &stepBar{w: stderr, what: "sensitivity", unit: "matrices"}
	sens, err := importance.MeasureSensitivity(ctx, m, sseqs, importance.SensitivityOptions{
		Precision: quant.INT4, GroupSize: ref.groupSize, Search: ref.search, Backend: be,
		Diag:     func(name string) []float64 { return stats.SecondMoment(importance.LayerName(name)) },
		Progress: sbar.step,
	})
	sbar.end(err)
	if err != nil {
		return nil, nil, err
	}
	return stats, sens, nil
}

// analyze runs the importance analysis with notices on stderr and a
// progress bar on a terminal. It stops when ctx is done.
//
// groups are the group sizes of the quantized candidates (nil: groupSize
// alone); search measures them with the scale search (see
// importance.Options.Search).
func (f *importanceFlags) analyze(ctx context.Context, ck *checkpoint.Checkpoint, be quant.Backend, groupSize int, groups []int, search bool, stderr io.Writer) (*importance.Analysis, error) {
	w, err := parseWeights(f.weights)
	if err != nil {
		return nil, err
	}
	var ref *sensitivityRef
	switch f.sensitivity {
	case "auto", "kl":
		if f.calibTokens != "" || f.calibSample > 0 {
			ref = &sensitivityRef{groupSize: groupSize, search: search}
			for _, g := range groups {
				ref.groupSize = max(ref.groupSize, g)
			}
		} else if f.sensitivity == "kl" {
			return nil, usagef("--sensitivity kl runs the model: it needs --calib-tokens or --calib-sample")
		}
	case "proxy":
	default:
		return nil, usagef("--sensitivity %q: want kl, proxy or auto", f.sensitivity)
	}
	calib, sens, err := f.calibrate(ctx, ck.Path, be, ref, stderr)
	if err != nil {
		return nil, err
	}
	matrices := 0
	for _, t := range ck.Tensors {
		if len(t.Shape) >= 2 && t.NumElements() > 0 {
			matrices++
		}
	}
	bar := &tensorProgress{bar: newProgress(stderr, importance.AnalyzedBytes(ck), "analyze"), label: "analyze", total: matrices}
	a, err := importance.AnalyzeContext(ctx, ck, importance.Options{
		Weights: w, Grads: f.grads, Calib: calib, Backend: be, GroupSize: groupSize, GroupSizes: groups, Search: search, Sensitivity: sens,
		Notice: func(s string) {
			if bar.bar != nil {
				bar.bar.Clear() // the notice gets a line of its own
			}
			fmt.Fprintf(stderr, "mixq: notice: %s\n", s)
		},
		Progress: bar.add,
	})
	bar.end(err)
	return a, err
}

// renderedReport is report.json and its charts, rendered in memory so that
// a failure shows before any output is written.
type renderedReport struct {
	json   []byte
	charts []charts.Chart
}

func renderReport(r *importance.Report) (*renderedReport, error) {
	b, err := r.JSON()
	if err != nil {
		return nil, err
	}
	cs, err := charts.All(r)
	if err != nil {
		return nil, err
	}
	return &renderedReport{b, cs}, nil
}

// stage writes the report files into a temporary directory beside dir; the
// returned commit puts it in place (replacing an old report, which
// checkOutput has already allowed) and discard removes it.
func (rr *renderedReport) stage(dir string, force bool) (files []string, commit func() error, discard func(), err error) {
	d, err := safeout.NewDirFor(dir, safeout.Report, force)
	if err != nil {
		return nil, nil, nil, err
	}
	tmp := d.Path()
	discard = d.Abort
	write := func(name string, b []byte) error {
		files = append(files, filepath.Join(dir, name))
		return os.WriteFile(filepath.Join(tmp, name), b, 0o644)
	}
	if err := write("report.json", rr.json); err != nil {
		discard()
		return nil, nil, nil, err
	}
	for _, c := range rr.charts {
		if err := write(c.Name, c.PNG); err != nil {
			discard()
			return nil, nil, nil, err
		}
	}
	return files, d.Commit, discard, nil
}

// writeFileAtomic writes through a temporary file renamed into place.
func writeFileAtomic(path string, b []byte) error { return safeout.WriteFile(path, b) }

func newAnalyzeCmd() *cobra.Command {
	var (
		f         importanceFlags
		out       string
		backend   string
		groupSize int
		force     bool
	)
	c := &cobra.Command{
		Use:   "analyze IN [--calib F]... [--calib-sample N] [--grads F] -o importance.json",
		Short: "Score every tensor's importance and measure its error at INT4, INT8 and F16",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usagef("analyze needs -o FILE")
			}
			png := strings.TrimSuffix(out, filepath.Ext(out)) + ".png"
			if png == out {
				return usagef("-o %s: the report is JSON; its chart goes beside it as NAME.png", out)
			}
			inputs := append(modelInputs(args[0]), f.inputs()...)
			if err := checkOutput(out, safeout.JSON, force, inputs...); err != nil {
				return err
			}
			if err := checkOutput(png, safeout.PNG, force, inputs...); err != nil {
				return err
			}
			be, err := openBackend(backend)
			if err != nil {
				return err
			}
			ck, err := checkpoint.Open(args[0], checkpoint.Options{})
			if err != nil {
				return err
			}
			defer ck.Close()
			a, err := f.analyze(c.Context(), ck, be, groupSize, nil, false, c.ErrOrStderr())
			if err != nil {
				return err
			}
			d, err := importance.NewDynamic(a, nil, importance.DefaultHigh, importance.DefaultLow)
			if err != nil {
				return err
			}
			r := a.Report(d)
			r.Policy = "analysis (precisions: dynamic 20/40/40)"
			b, err := r.JSON()
			if err != nil {
				return err
			}
			if err := writeFileAtomic(out, b); err != nil {
				return err
			}
			img, err := charts.Importance(r)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(png, img); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s and %s: %d matrices scored with signals %v\n", out, png, len(a.Matrices()), a.Used)
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVarP(&out, "output", "o", "", "output JSON file")
	c.Flags().StringVar(&backend, "backend", "auto", backendHelp)
	c.Flags().IntVar(&groupSize, "group-size", quant.DefaultGroupSize, "group size of the measured INT8/INT4 candidates")
	c.Flags().BoolVar(&force, "force", false, "replace existing outputs")
	return c
}
