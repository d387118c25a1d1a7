package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/ctensors"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/shards"
)

// ctensorsOf lists the tensors of an open mixq checkpoint.
func ctensorsOf(m *qformat.Model) []ctensors.Tensor {
	t := make([]ctensors.Tensor, len(m.Entries))
	for i, e := range m.Entries {
		t[i] = ctensors.Tensor{Name: e.Name, Record: e.Record}
	}
	return t
}

// ctensorsOfPlan lists the tensors a quantization plan will write.
func ctensorsOfPlan(p *qformat.Plan) []ctensors.Tensor {
	t := make([]ctensors.Tensor, len(p.Items))
	for i, it := range p.Items {
		t[i] = ctensors.Tensor{Name: it.Input.Name, Record: it.Record}
	}
	return t
}

// planCompressedTensors plans the directory for checkpoint ck (the mixq
// output for export, the input for estimate and quantize), carrying its
// non-weight files (checkpoint.Companions, as quantize does) and those of
// --tokenizer-dir that it lacks.
func planCompressedTensors(ck *checkpoint.Checkpoint, ts []ctensors.Tensor, ef *exportFlags) (*ctensors.Export, error) {
	carry, skipped, err := ck.Companions()
	if err != nil {
		return nil, quant.InputError(err)
	}
	for _, s := range skipped {
		fmt.Fprintf(notices, "mixq: not carried into the output: %s: %s\n", s.Name, s.Why)
	}
	extra := make([]shards.Extra, len(carry))
	have := map[string]bool{}
	for i, c := range carry {
		extra[i] = shards.Extra{Name: c.Name, Src: c.Path, Size: c.Size}
		have[c.Name] = true
	}
	more, err := ctensors.Companions(ef.tokenizerDir)
	if err != nil {
		return nil, quant.InputError(err)
	}
	for _, e := range more {
		if !have[e.Name] {
			extra = append(extra, e)
		}
	}
	return ctensors.Plan(ck.Config, ts, ctensors.Options{MaxShardSize: mixq.DefaultMaxShardSize, Extra: extra})
}

// exportCompressedTensors writes m as a compressed-tensors directory.
func exportCompressedTensors(c *cobra.Command, m *qformat.Model, path, out string, ef *exportFlags, force bool) error {
	x, err := planCompressedTensors(m.Checkpoint, ctensorsOf(m), ef)
	if err != nil {
		return err
	}
	for _, n := range x.Notices {
		fmt.Fprintf(notices, "mixq: %s\n", n)
	}
	total := x.Layout.TotalBytes()
	p := &tensorProgress{bar: newProgress(c.ErrOrStderr(), total, "export"), label: "export", total: len(m.Entries)}
	err = x.Write(c.Context(), m, out, force, p.add)
	p.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "wrote %s: compressed-tensors %s, %d files copied, %d bytes (%s)\n", out, ctensors.Format, len(x.Layout.Extra), total, human(total))
	return nil
}
