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

// exportCompressedTensors writes m as a compressed-tensors directory, with
// the non-weight files beside m (and in --tokenizer-dir) copied in.
func exportCompressedTensors(c *cobra.Command, m *qformat.Model, path, out string, ef *exportFlags, force bool) error {
	extra, err := ctensors.Companions(checkpointDir(path), ef.tokenizerDir)
	if err != nil {
		return quant.InputError(err)
	}
	x, err := ctensors.Plan(m.Checkpoint.Config, ctensorsOf(m), ctensors.Options{MaxShardSize: mixq.DefaultMaxShardSize, Extra: extra})
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
	fmt.Fprintf(c.OutOrStdout(), "wrote %s: compressed-tensors %s, %d files copied, %d bytes (%s)\n", out, ctensors.Format, len(extra), total, human(total))
	return nil
}
