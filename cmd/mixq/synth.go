package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/synth"
)

func newSynthCmd() *cobra.Command {
	var (
		out, preset, dtype, maxShard string
		seed                         uint64
		layers                       int
		force, list                  bool
	)
	c := &cobra.Command{
		Use:   "synth -o DIR",
		Short: "Write a deterministic synthetic checkpoint (Llama/Mixtral names, heavy-tailed weights)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if list {
				tw := newTable(c.OutOrStdout())
				fmt.Fprintln(tw, "PRESET\tPARAMETERS\tF32 SIZE\tDESCRIPTION")
				for _, p := range synth.Presets() {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Name, p.Parameters(), human(4*p.Parameters()), p.Description)
				}
				return tw.Flush()
			}
			if out == "" {
				return usagef("synth needs -o DIR")
			}
			p, err := synth.Lookup(preset)
			if err != nil {
				return usageError{err}
			}
			if layers > 0 {
				p = p.WithLayers(layers)
			}
			dt, err := parseFloatDType("dtype", dtype)
			if err != nil {
				return err
			}
			shard, err := parseSize(maxShard)
			if err != nil {
				return usagef("--max-shard-size: %v", err)
			}
			if err := checkOutput(out, safeout.Directory, force); err != nil {
				return err
			}
			total := p.Parameters() * int64(dt.Size())
			bar := newProgress(c.ErrOrStderr(), total, "synth "+p.Name)
			var progress func(int64)
			if bar != nil {
				progress = func(n int64) { bar.Add64(n) }
			}
			err = synth.WriteContext(c.Context(), out, synth.Options{Preset: p, Seed: seed, DType: dt, MaxShardSize: shard, Progress: progress, Replace: force})
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s: preset %s, %d layers, %d parameters as %s (seed %d)\n", out, p.Name, p.Layers, p.Parameters(), dt, seed)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output directory")
	c.Flags().StringVar(&preset, "preset", "seed", "model preset (see --list)")
	c.Flags().Uint64Var(&seed, "seed", 1, "random seed; the same seed gives the same bytes")
	c.Flags().IntVar(&layers, "layers", 0, "override the preset's number of layers")
	c.Flags().StringVar(&dtype, "dtype", "bf16", "dtype of the weights: f32|f16|bf16")
	c.Flags().StringVar(&maxShard, "max-shard-size", "5GB", "largest shard")
	c.Flags().BoolVar(&force, "force", false, "replace an existing output")
	c.Flags().BoolVar(&list, "list", false, "list the presets")
	return c
}
