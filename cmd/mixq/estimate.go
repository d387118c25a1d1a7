package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/qformat"
)

func newEstimateCmd() *cobra.Command {
	var (
		pf     planFlags
		target float64
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "estimate IN",
		Short: "Report the exact size of the quantized output, from headers alone",
		Long: `Report the exact size of the quantized output and whether it meets the size
target, --target-ratio (compression versus FP32, default 6; --target is the
same flag under its old name). With --policy budget the target is also what
the precisions are chosen to reach; static and dynamic only compare with it.
The static policy reads headers alone; dynamic and budget read the weights
for the importance analysis.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if c.Flags().Changed("target") {
				if c.Flags().Changed("target-ratio") && pf.targetRatio != target {
					return usagef("--target %v and --target-ratio %v: --target is the old name of --target-ratio; give one", target, pf.targetRatio)
				}
				pf.targetRatio = target
			}
			pf.headersOnly = true
			p, err := pf.plan(c, args[0])
			if err != nil {
				return err
			}
			defer p.ck.Close()
			plan := p.plan
			compare := qformat.DefaultTarget
			switch {
			case pf.targetRatio > 0:
				compare = pf.targetRatio
			case pf.targetBPW > 0:
				compare = 32 / pf.targetBPW
			}
			if done, err := estimateFormat(c, args[0], plan, p.ck, asJSON); done {
				return err
			}
			est := plan.Estimate(compare)
			if asJSON {
				return writeJSON(c.OutOrStdout(), est)
			}
			printEstimate(c.OutOrStdout(), est)
			return nil
		},
	}
	pf.register(c)
	registerFormatFlags(c)
	c.Flags().Float64Var(&target, "target", qformat.DefaultTarget, "the old name of --target-ratio")
	c.Flags().MarkHidden("target")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 2, 4, 2, ' ', 0) }

// printEstimate renders the size table.
func printEstimate(w io.Writer, e *qformat.Estimate) {
	verdict := "meets"
	if !e.MeetsTarget {
		verdict = "misses"
	}
	fmt.Fprintf(w, "parameters       %d\n", e.TotalParameters)
	fmt.Fprintf(w, "fp32 bytes       %d (%s)\n", e.FP32Bytes, human(e.FP32Bytes))
	fmt.Fprintf(w, "mixed bytes      %d (%s), %.3f bits/weight\n", e.MixedPrecisionBytes, human(e.MixedPrecisionBytes), e.BitsPerWeight)
	fmt.Fprintf(w, "compression      %.3fx vs FP32, %s the %.2gx target\n", e.CompressionRatio, verdict, e.TargetCompression)
	fmt.Fprintf(w, "overhead         %d bytes (headers, metadata, index, config)\n\n", e.OverheadBytes)
	for _, sec := range []struct {
		title string
		rows  []qformat.Breakdown
	}{{"PRECISION", e.ByPrecision}, {"COMPONENT", e.ByComponent}} {
		tw := newTable(w)
		fmt.Fprintf(tw, "%s\tTENSORS\tPARAMETERS\tBYTES\tBITS/W\tSHARE\n", sec.title)
		for _, b := range sec.rows {
			share := 0.0
			if e.TensorBytes > 0 {
				share = 100 * float64(b.Bytes) / float64(e.TensorBytes)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.3f\t%.1f%%\n", b.Name, b.Tensors, b.Parameters, human(b.Bytes), b.BitsPerW, share)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
}

// human renders a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
