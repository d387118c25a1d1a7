package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/bench"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

func newBenchCmd() *cobra.Command {
	var quick, asJSON bool
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure kernel throughput per op and shape next to a memory-copy baseline",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			be := cpu.New(0)
			rows, err := bench.Run(bench.Options{Quick: quick, Backends: []quant.Backend{be}})
			if err != nil {
				return err
			}
			ev, err := bench.EvalRows(be, quick)
			if err != nil {
				return err
			}
			rows = append(rows, ev...)
			if asJSON {
				return writeJSON(c.OutOrStdout(), rows)
			}
			tw := newTable(c.OutOrStdout())
			fmt.Fprintln(tw, "BACKEND\tOP\tPRECISION\tSHAPE\tMEDIAN\tGB/S\tVS COPY\tTOKENS/S")
			for _, r := range rows {
				if r.TokensPerSec > 0 {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f ms\t-\t-\t%.0f\n", r.Backend, r.Op, dash(r.Precision), r.Shape, 1e3*r.Seconds, r.TokensPerSec)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f ms\t%.2f\t%.2f\t-\n", r.Backend, r.Op, dash(r.Precision), r.Shape, 1e3*r.Seconds, r.GBps, r.VsCopy)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&quick, "quick", false, "one shape, short budgets")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
