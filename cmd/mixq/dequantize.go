package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/internal/safeout"
)

func newDequantizeCmd() *cobra.Command {
	var (
		out, dtype, backend, maxShard string
		force                         bool
	)
	c := &cobra.Command{
		Use:   "dequantize IN -o OUT",
		Short: "Turn a mixq checkpoint back into a floating-point safetensors checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usagef("dequantize needs -o OUT")
			}
			if err := checkOutput(out, safeout.Directory, force, modelInputs(args[0])...); err != nil {
				return err
			}
			dt, err := parseFloatDType("dtype", dtype)
			if err != nil {
				return err
			}
			shard, err := parseSize(maxShard)
			if err != nil {
				return usagef("--max-shard-size: %v", err)
			}
			be, err := openBackend(backend)
			if err != nil {
				return err
			}
			m, err := mixq.OpenQuantized(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			var total int64
			for _, e := range m.Entries {
				total += 4 * e.NumElements()
			}
			p := &tensorProgress{bar: newProgress(c.ErrOrStderr(), total, "dequantize"), label: "dequantize", total: len(m.Entries)}
			err = mixq.Dequantize(c.Context(), m, out, dt, mixq.Options{Backend: be, Force: force, MaxShardSize: shard, Progress: p.add, Notice: notice})
			p.finish()
			if err != nil {
				return err
			}
			n, err := mixq.DirBytes(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s: %d tensors as %s, %s\n", out, len(m.Entries), dt, human(n))
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output directory")
	c.Flags().StringVar(&dtype, "dtype", "f32", "output dtype: f32|f16|bf16")
	c.Flags().StringVar(&backend, "backend", "auto", backendHelp)
	c.Flags().StringVar(&maxShard, "max-shard-size", "5GB", "largest shard of the output")
	c.Flags().BoolVar(&force, "force", false, "replace an existing output")
	return c
}
