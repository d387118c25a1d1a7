package main

import (
	"fmt"
	"io"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// warnf prints a warning: the run goes on, but the user probably wants
// something else.
func warnf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "mixq: warning: "+format+"\n", args...)
}

// warnPlan tells the user about flags that will not do what they probably
// meant, once the plan shows it: rules that match no tensor or decide none,
// and group sizes whose scales cost more than they save.
func (f *planFlags) warnPlan(w io.Writer, ck *checkpoint.Checkpoint, plan *qformat.Plan) {
	decided := map[string]int{}
	for _, it := range plan.Items {
		decided[it.Decision.Source+"\x00"+it.Decision.Rule]++
	}
	for _, r := range f.userRules {
		matched := 0
		for _, t := range ck.Tensors {
			if r.Match(t.Name) {
				matched++
			}
		}
		switch {
		case matched == 0:
			warnf(w, "rule %s (%s) matches no tensor of %s", r, r.Source, ck.Path)
		case decided[r.Source+"\x00"+r.String()] == 0:
			warnf(w, "rule %s (%s) matches %d tensors but decides none: an earlier rule, the policy or the format (1-D tensors, ragged rows) decides them first; --explain shows which", r, r.Source, matched)
		}
	}
	quantized := false
	for _, it := range plan.Items {
		quantized = quantized || it.Record.Precision == quant.INT8.String() || it.Record.Precision == quant.INT4.String()
	}
	if quantized && f.groupSize < 16 {
		bits := func(p quant.Precision) float64 {
			// A representative row of 4096 weights, packed as the format does.
			l := quant.Layout{Rows: 1, Cols: 4096, GroupSize: f.groupSize, Precision: p}
			return float64(8*(l.PackedBytes()+2*l.NumScales())) / float64(l.Cols)
		}
		b8, b4 := bits(quant.INT8), bits(quant.INT4)
		if b4 >= 16 || b8 >= 16 {
			warnf(w, "--group-size %d makes quantized tensors larger than F16: INT8 costs %.1f and INT4 %.1f bits per weight, F16 16; the F16 scale of each group is most of it (the default group of %d costs %.3f bits per weight)",
				f.groupSize, b8, b4, quant.DefaultGroupSize, 16.0/quant.DefaultGroupSize)
		} else {
			warnf(w, "--group-size %d spends %.1f bits per weight on scales alone (INT8 %.1f, INT4 %.1f bits per weight); 32 or more keeps that under 0.5",
				f.groupSize, 16/float64(f.groupSize), b8, b4)
		}
	}
}
