package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/qformat"
)

func newQuantizeCmd() *cobra.Command {
	var (
		pf        planFlags
		rf        roundingFlags
		out       string
		reportDir string
		force     bool
		asJSON    bool
	)
	c := &cobra.Command{
		Use:   "quantize IN -o OUT",
		Short: "Quantize a checkpoint to mixed precision",
		Long: `Quantize a safetensors checkpoint (one file, or a Hugging Face directory with
shards) into a mixq checkpoint directory. The output is written under a
temporary name and renamed when complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usagef("quantize needs -o OUT")
			}
			pf.rounding = &rf
			if err := pf.applyPreset(c); err != nil {
				return err
			}
			ef, err := formatFlags(c)
			if err != nil {
				return err
			}
			// Refuse before any analysis runs, not after.
			inputs := append(append(modelInputs(args[0]), pf.inputs()...), ef.inputs()...)
			if err := checkOutput(out, outputKind(ef.format), force, inputs...); err != nil {
				return err
			}
			// The report of the importance policies too, and it goes beside
			// the output, never into it.
			if pf.policy != "static" {
				if reportDir == "" {
					reportDir = filepath.Clean(out) + ".report"
				}
				if err := checkOutput(reportDir, safeout.Report, force, append(inputs, out)...); err != nil {
					return err
				}
			} else if reportDir != "" {
				warnf(c.ErrOrStderr(), "--report is ignored: the static policy writes no report (it is for --policy dynamic and budget)")
			}
			p, err := pf.plan(c, args[0])
			if err != nil {
				return err
			}
			defer p.ck.Close()
			ck, opt, plan := p.ck, p.opt, p.plan
			if opt.Rounder, err = rf.rounder(c, args[0], p, &pf.imp); err != nil {
				return err
			}
			var inBytes int64
			for _, t := range ck.Tensors {
				inBytes += int64(len(t.Raw()))
			}
			bar := &tensorProgress{bar: newProgress(c.ErrOrStderr(), inBytes, "quantize"), label: "quantize", total: len(plan.Items)}
			// The report is rendered and staged before the output is
			// written, and put in place right after it.
			var reportFiles []string
			commitReport := func() error { return nil }
			if r := p.report(); r != nil {
				rep, err := renderReport(r)
				if err != nil {
					return err
				}
				files, commit, discard, err := rep.stage(reportDir, force)
				if err != nil {
					return err
				}
				defer discard()
				reportFiles, commitReport = files, commit
			}
			opt.Force, opt.Progress = force, bar.add
			if ef.format != formatMixq {
				err := quantizeForeign(c, ck, plan, opt, args[0], out, ef, force)
				bar.finish()
				if err != nil {
					return err
				}
				return commitReport()
			}
			res, err := mixq.Quantize(c.Context(), ck, plan, out, opt)
			bar.finish()
			if err != nil {
				return err
			}
			if err := commitReport(); err != nil {
				return fmt.Errorf("%s was written, but its report was not: %w", out, err)
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), struct {
					*mixq.Result
					Report []string `json:"report_files,omitempty"`
				}{res, reportFiles})
			}
			w := c.OutOrStdout()
			fmt.Fprintf(w, "wrote %s with backend %s and policy %s\n", res.Output, res.Backend, opt.Policy.Name())
			if len(reportFiles) > 0 {
				fmt.Fprintf(w, "report: %s\n", strings.Join(reportFiles, ", "))
			}
			printEstimate(w, res.Estimate)
			fmt.Fprintf(w, "bytes on disk: %d (estimate %d)\n", res.WrittenBytes, res.Estimate.MixedPrecisionBytes)
			return nil
		},
	}
	pf.register(c)
	rf.register(c)
	registerFormatFlags(c)
	c.Flags().StringVarP(&out, "output", "o", "", "output directory")
	c.Flags().StringVar(&reportDir, "report", "", "dynamic/budget: directory for report.json and charts (default OUT.report)")
	c.Flags().BoolVar(&force, "force", false, "replace an existing output")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printExplain lists each tensor's decision and the rule behind it.
func printExplain(w io.Writer, plan *qformat.Plan) {
	tw := newTable(w)
	fmt.Fprintln(tw, "TENSOR\tSHAPE\tCOMPONENT\tPRECISION\tRULE\tSOURCE\tNOTE")
	for _, it := range plan.Items {
		d := it.Decision
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\t%s\n", it.Input.Name, it.Input.Shape, d.Component, it.Record.Precision, dash(d.Rule), dash(d.Source), d.Reason)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
