package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/ctensors"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
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

// planCompressedTensors plans the directory for the checkpoint at path,
// with the non-weight files beside it (and in --tokenizer-dir) copied in.
func planCompressedTensors(path string, config []byte, ts []ctensors.Tensor, ef *exportFlags) (*ctensors.Export, error) {
	extra, err := ctensors.Companions(checkpointDir(path), ef.tokenizerDir)
	if err != nil {
		return nil, quant.InputError(err)
	}
	return ctensors.Plan(config, ts, ctensors.Options{MaxShardSize: mixq.DefaultMaxShardSize, Extra: extra})
}

// exportCompressedTensors writes m as a compressed-tensors directory.
func exportCompressedTensors(c *cobra.Command, m *qformat.Model, path, out string, ef *exportFlags, force bool) error {
	x, err := planCompressedTensors(path, m.Checkpoint.Config, ctensorsOf(m), ef)
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
