package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// inspectTensor is one row of mixq inspect.
type inspectTensor struct {
	Name      string            `json:"name"`
	Component policy.Component  `json:"component"`
	Shape     []int64           `json:"shape"`
	DType     safetensors.DType `json:"dtype"`
	// StoredDType is the dtype on disk: I8 or U8 codes (with F16 scales)
	// for int8 and int4, else the dtype of the stored tensor.
	StoredDType safetensors.DType `json:"stored_dtype"`
	Precision   string            `json:"precision"`
	GroupSize   int               `json:"group_size,omitempty"`
	// EffectiveGroup is how many columns one scale covers: GroupSize, or
	// the row length when a row is shorter than a group.
	EffectiveGroup int     `json:"effective_group,omitempty"`
	Parameters     int64   `json:"parameters"`
	Bytes          int64   `json:"bytes"`
	BitsPerW       float64 `json:"bits_per_weight"`
	File           string  `json:"file"`
}

type inspectReport struct {
	Path       string          `json:"path"`
	Quantized  bool            `json:"quantized"`
	Format     string          `json:"format,omitempty"`
	Files      []string        `json:"files"`
	Parameters int64           `json:"parameters"`
	Bytes      int64           `json:"tensor_bytes"`
	Tensors    []inspectTensor `json:"tensors"`
}

func newInspectCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "inspect PATH",
		Short: "List the tensors of an original or quantized checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			rep, err := inspect(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), rep)
			}
			printInspect(c.OutOrStdout(), rep)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// add appends a row and its totals.
func (rep *inspectReport) add(t inspectTensor) {
	if t.Parameters > 0 {
		t.BitsPerW = float64(8*t.Bytes) / float64(t.Parameters)
	}
	rep.Parameters += t.Parameters
	rep.Bytes += t.Bytes
	rep.Tensors = append(rep.Tensors, t)
}

func inspect(path string) (*inspectReport, error) {
	switch {
	case isGGUF(path):
		return inspectGGUF(path)
	case isCompressedTensors(path):
		return inspectCT(path)
	}
	ck, err := checkpoint.Open(path, checkpoint.Options{AllowedDTypes: []safetensors.DType{
		safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.I8, safetensors.U8,
	}})
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	rep := &inspectReport{Path: ck.Path, Files: ck.ShardFiles()}
	add := rep.add
	if qformat.IsQuantized(ck) {
		m, err := qformat.FromCheckpoint(ck)
		if err != nil {
			return nil, err
		}
		rep.Quantized, rep.Format = true, qformat.Format
		for _, e := range m.Entries {
			add(inspectTensor{
				Name: e.Name, Component: policy.Classify(e.Name), Shape: e.Record.Shape, DType: e.Record.DType,
				StoredDType: e.StoredDType(), Precision: e.Record.Precision,
				GroupSize: e.Record.GroupSize, EffectiveGroup: e.EffectiveGroup(),
				Parameters: e.NumElements(), Bytes: e.StoredBytes(), File: e.File(),
			})
		}
		return rep, nil
	}
	for _, t := range ck.Tensors {
		if t.DType == safetensors.I8 || t.DType == safetensors.U8 {
			return nil, quant.InputError(&quant.TensorError{File: t.File.Path(), Tensor: t.Name,
				Err: fmt.Errorf("dtype %s in a checkpoint without mixq metadata (%q): neither an original nor a mixq checkpoint", t.DType, qformat.FormatKey)})
		}
		add(inspectTensor{
			Name: t.Name, Component: policy.Classify(t.Name), Shape: t.Shape, DType: t.DType, StoredDType: t.DType,
			Precision: string(t.DType), Parameters: t.NumElements(), Bytes: int64(len(t.Raw())), File: t.File.Path(),
		})
	}
	return rep, nil
}

func printInspect(w io.Writer, rep *inspectReport) {
	kind := "original checkpoint"
	switch {
	case strings.HasPrefix(rep.Format, inspectGGUFName), rep.Format == inspectCTName:
		kind = rep.Format
	case rep.Quantized:
		kind = "mixq checkpoint (" + rep.Format + ")"
	}
	fmt.Fprintf(w, "%s: %s, %d files, %d tensors, %d parameters, %s of tensor data\n\n",
		rep.Path, kind, len(rep.Files), len(rep.Tensors), rep.Parameters, human(rep.Bytes))
	tw := newTable(w)
	// DTYPE is the original dtype, STORED what is on disk; GROUP is the
	// effective group, with the requested size beside it when a row is
	// shorter than a group.
	fmt.Fprintln(tw, "TENSOR\tSHAPE\tDTYPE\tSTORED\tPRECISION\tGROUP\tBYTES\tBITS/W\tCOMPONENT")
	for _, t := range rep.Tensors {
		g := "-"
		if t.EffectiveGroup > 0 {
			g = fmt.Sprint(t.EffectiveGroup)
			if t.EffectiveGroup != t.GroupSize {
				g += fmt.Sprintf(" (of %d)", t.GroupSize)
			}
		}
		stored := string(t.StoredDType)
		if t.EffectiveGroup > 0 {
			stored += "+F16"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\t%d\t%.3f\t%s\n", t.Name, t.Shape, t.DType, stored, t.Precision, g, t.Bytes, t.BitsPerW, t.Component)
	}
	tw.Flush()
}
