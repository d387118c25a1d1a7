package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/safetensors"
)

func newCalibrateCmd() *cobra.Command {
	var (
		tf        tokenFlags
		out       string
		backend   string
		maxTokens int
		format    string
		force     bool
	)
	c := &cobra.Command{
		Use:   "calibrate MODEL (--tokens F.json | --sample N) -o ACTS.safetensors",
		Short: "Capture the input activations of every linear layer during a forward pass",
		Long: `Run the model over calibration sequences and write, for every linear layer,
the activations it received as a [tokens, in_features] F32 tensor named after
the layer (the weight name without ".weight"). These activation files are
what the importance analysis reads (--calib). At most --max-tokens rows are
kept per layer (MoE experts see only the tokens routed to them). With
--format stats it writes per-channel statistics instead (mean, M2, count per
layer), streamed through the backend in memory independent of the number of
tokens.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usagef("calibrate needs -o FILE")
			}
			if err := checkOutput(out, safeout.Safetensors, force, modelInputs(args[0], tf.tokens)...); err != nil {
				return err
			}
			if maxTokens < 1 {
				return usagef("--max-tokens must be positive")
			}
			if format != "acts" && format != "stats" {
				return usagef("--format %q: want acts or stats", format)
			}
			be, err := openBackend(backend)
			if err != nil {
				return err
			}
			m, err := model.Load(args[0], be)
			if err != nil {
				return err
			}
			defer m.Close()
			ctx := c.Context()
			seqs, err := tf.sequences(ctx, m, 1, c.ErrOrStderr())
			if err != nil {
				return err
			}
			bar := newCounter(c.ErrOrStderr(), int64(eval.Tokens(seqs)), "calibrate", "tokens")
			if format == "stats" {
				st, err := importance.FromModelContext(ctx, m, seqs, be, bar.add)
				bar.end(err)
				if err != nil {
					return err
				}
				if err := st.Write(out); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "wrote %s: statistics of %d linear layers over %d sequences\n", out, len(st.Layers), len(seqs))
				return nil
			}
			acts := map[string]*capture{}
			obs := func(weight string, x []float32, tokens, in int) {
				a := acts[weight]
				if a == nil {
					a = &capture{in: in}
					acts[weight] = a
				}
				take := min(tokens, maxTokens-a.rows)
				if take > 0 {
					a.data = append(a.data, x[:take*in]...)
					a.rows += take
				}
			}
			for _, grp := range eval.GroupByLength(seqs) {
				toks := make([][]int, len(grp))
				for i, g := range grp {
					toks[i] = g.Tokens
				}
				s := m.NewSession(len(toks), len(toks[0]))
				s.OnLayer = model.LayerProgress(len(toks)*len(toks[0]), bar.add)
				if _, err := s.ForwardContext(ctx, toks, obs); err != nil {
					bar.end(err)
					return err
				}
			}
			bar.end(nil)
			var specs []safetensors.Spec
			for _, w := range m.LinearNames() {
				a := acts[w]
				if a == nil || a.rows == 0 {
					continue // an expert no token was routed to
				}
				specs = append(specs, safetensors.Spec{Name: strings.TrimSuffix(w, ".weight"), DType: safetensors.F32, Shape: []int64{int64(a.rows), int64(a.in)}})
			}
			md := map[string]string{"mixq.calibration": "activations/1", "sequences": strconv.Itoa(len(seqs))}
			sw, err := safetensors.Create(out, specs, md)
			if err != nil {
				return err
			}
			defer sw.Abort()
			for _, sp := range specs {
				if err := stop.Err(ctx); err != nil {
					return err // the deferred Abort removes the temporary
				}
				a := acts[sp.Name+".weight"]
				b := make([]byte, 4*len(a.data))
				for i, v := range a.data {
					binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
				}
				if err := sw.Write(sp.Name, b); err != nil {
					return err
				}
			}
			if err := sw.Close(); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s: activations of %d linear layers over %d sequences\n", out, len(specs), len(seqs))
			return nil
		},
	}
	tf.register(c)
	c.Flags().StringVarP(&out, "output", "o", "", "output safetensors file")
	c.Flags().BoolVar(&force, "force", false, "replace an existing output")
	c.Flags().StringVar(&backend, "backend", "auto", backendHelp)
	c.Flags().IntVar(&maxTokens, "max-tokens", 4096, "acts: rows kept per layer")
	c.Flags().StringVar(&format, "format", "acts", "acts: the activations themselves; stats: streaming per-channel mean/M2/count, any number of tokens in bounded memory")
	return c
}

type capture struct {
	in, rows int
	data     []float32
}
