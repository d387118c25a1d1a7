package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/ctensors"
	"github.com/mixq/mixq/ggufexport"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/qformat"
)

// Output formats of export (and quantize --format).
const (
	formatMixq   = "mixq"
	formatGGUF   = "gguf"
	formatCT     = "compressed-tensors"
	formatChoice = "gguf|compressed-tensors"
)

// exportFlags are the flags of the foreign output formats.
type exportFlags struct {
	format, vocabFrom, tokenizerDir string
	noVocab                         bool
}

func (f *exportFlags) register(c *cobra.Command, def string) {
	help := "output format: " + formatChoice
	if def == formatMixq {
		help = "output format: mixq|" + formatChoice
	}
	c.Flags().StringVar(&f.format, "format", def, help)
	c.Flags().StringVar(&f.vocabFrom, "vocab-from", "", "gguf: take the tokenizer metadata from this GGUF file")
	c.Flags().StringVar(&f.tokenizerDir, "tokenizer-dir", "", "directory with tokenizer.model / tokenizer.json (default: beside the weights)")
	c.Flags().BoolVar(&f.noVocab, "no-vocab", false, "gguf: write a file without a vocabulary when there is no tokenizer")
}

func (f *exportFlags) check() error {
	switch f.format {
	case formatGGUF, formatCT, formatMixq:
	default:
		return usagef("--format %q: want %s", f.format, formatChoice)
	}
	if f.format != formatGGUF && (f.vocabFrom != "" || f.noVocab) {
		return usagef("--vocab-from and --no-vocab apply to --format gguf")
	}
	return nil
}

// inputs are the files the export flags read.
func (f *exportFlags) inputs() []string { return []string{f.vocabFrom, f.tokenizerDir} }

// ggufOptions are the export options for a checkpoint at path.
func (f *exportFlags) ggufOptions(path string) ggufexport.Options {
	dir := checkpointDir(path)
	tk := f.tokenizerDir
	if tk == "" {
		tk = dir
	}
	return ggufexport.Options{Name: filepath.Base(dir), TokenizerDir: tk, VocabFrom: f.vocabFrom, NoVocab: f.noVocab}
}

// checkpointDir is the directory of a checkpoint path (a directory or one
// of its files).
func checkpointDir(path string) string {
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return filepath.Dir(path)
	}
	return filepath.Clean(path)
}

// outputKind is what --force may replace for a format.
func outputKind(format string) safeout.Kind {
	if format == formatGGUF {
		return safeout.GGUF
	}
	return safeout.Directory
}

func newExportCmd() *cobra.Command {
	var (
		out   string
		force bool
		ef    exportFlags
	)
	c := &cobra.Command{
		Use:   "export Q -o OUT --format " + formatChoice,
		Short: "Convert a mixq checkpoint to GGUF (llama.cpp, ollama) or compressed-tensors (vLLM), same codes",
		Long: `export converts an existing mixq output without re-quantizing: the INT4/INT8
codes and F16 scales are moved into the target format unchanged, so the
runtime decodes exactly the floats that "mixq dequantize" gives.

  --format gguf                one .gguf file (Llama, Mistral, Mixtral)
  --format compressed-tensors  a Hugging Face directory in the pack-quantized format`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return usagef("export needs -o OUT")
			}
			if ef.format == "" {
				return usagef("export needs --format %s", formatChoice)
			}
			if err := ef.check(); err != nil {
				return err
			}
			if ef.format == formatMixq {
				return usagef("--format %q: the input already is a mixq checkpoint; want %s", ef.format, formatChoice)
			}
			if err := checkOutput(out, outputKind(ef.format), force, append(modelInputs(args[0]), ef.inputs()...)...); err != nil {
				return err
			}
			m, err := mixq.OpenQuantized(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			return exportModel(c, m, args[0], out, &ef, force)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output file (gguf) or directory (compressed-tensors)")
	c.Flags().BoolVar(&force, "force", false, "replace an existing output that mixq wrote")
	ef.register(c, "")
	return c
}

// exportModel writes m (read from path) to out in ef.format and reports.
func exportModel(c *cobra.Command, m *qformat.Model, path, out string, ef *exportFlags, force bool) error {
	switch ef.format {
	case formatGGUF:
		x, err := ggufexport.Plan(m.Checkpoint.Config, ggufexport.Sources(m), ef.ggufOptions(path))
		if err != nil {
			return err
		}
		for _, n := range x.Notices {
			fmt.Fprintf(notices, "mixq: %s\n", n)
		}
		bar := newProgress(c.ErrOrStderr(), x.Layout.Size-x.Layout.DataOffset, "export gguf")
		err = x.Write(c.Context(), m, out, func(n int64) {
			if bar != nil {
				bar.Add64(n)
			}
		})
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.OutOrStdout(), "wrote %s: %d tensors (%s), %d bytes (%s)\n", out, len(x.Tensors), typeCounts(x), x.Layout.Size, human(x.Layout.Size))
		return nil
	case formatCT:
		return exportCompressedTensors(c, m, path, out, ef, force)
	}
	return usagef("--format %q: want %s", ef.format, formatChoice)
}

// typeCounts renders "Q4_0 ×12, F32 ×13".
func typeCounts(x *ggufexport.Export) string {
	n := map[string]int{}
	for _, t := range x.Tensors {
		n[t.Type.String()]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, n[k])
	}
	return strings.Join(parts, ", ")
}

// registerFormatFlags adds --format and the export flags to a command
// that writes mixq checkpoints by default (estimate, quantize).
func registerFormatFlags(c *cobra.Command) {
	var ef exportFlags
	ef.register(c, formatMixq)
}

// formatFlags reads back the flags registerFormatFlags added.
func formatFlags(c *cobra.Command) (*exportFlags, error) {
	fs := c.Flags()
	var ef exportFlags
	var err error
	if ef.format, err = fs.GetString("format"); err != nil {
		return nil, err
	}
	ef.vocabFrom, _ = fs.GetString("vocab-from")
	ef.tokenizerDir, _ = fs.GetString("tokenizer-dir")
	ef.noVocab, _ = fs.GetBool("no-vocab")
	return &ef, ef.check()
}

// foreignEstimate is the size report of a GGUF or compressed-tensors output.
type foreignEstimate struct {
	Format  string         `json:"format"`
	Bytes   int64          `json:"bytes"`
	Tensors map[string]int `json:"tensors,omitempty"`
	Notices []string       `json:"notices,omitempty"`
}

// estimateFormat reports the exact size of the output in --format when it
// is not mixq's own; done is false for --format mixq.
func estimateFormat(c *cobra.Command, path string, plan *qformat.Plan, ck *checkpoint.Checkpoint, asJSON bool) (done bool, err error) {
	ef, err := formatFlags(c)
	if err != nil || ef.format == formatMixq {
		return err != nil, err
	}
	est := foreignEstimate{Format: ef.format}
	switch ef.format {
	case formatGGUF:
		x, err := ggufexport.Plan(ck.Config, ggufexport.SourcesOfPlan(plan), ef.ggufOptions(path))
		if err != nil {
			return true, err
		}
		est.Bytes, est.Notices = x.Layout.Size, x.Notices
		est.Tensors = map[string]int{}
		for _, t := range x.Tensors {
			est.Tensors[t.Type.String()]++
		}
	case formatCT:
		x, err := planCompressedTensors(ck, ctensorsOfPlan(plan), ef)
		if err != nil {
			return true, err
		}
		est.Bytes, est.Notices = x.Layout.TotalBytes(), x.Notices
	}
	if asJSON {
		return true, writeJSON(c.OutOrStdout(), est)
	}
	for _, n := range est.Notices {
		fmt.Fprintf(notices, "mixq: %s\n", n)
	}
	fmt.Fprintf(c.OutOrStdout(), "%s bytes %d (%s)\n", ef.format, est.Bytes, human(est.Bytes))
	return true, nil
}

// quantizeForeign is quantize --format gguf|compressed-tensors: the
// checkpoint is quantized into a temporary mixq directory beside out
// (safeout's temporary, swept if the process dies), exported from it with
// the same codes, and the temporary removed. The foreign output is planned
// first, so an unsupported architecture or a bad tokenizer fails before
// any quantization work.
func quantizeForeign(c *cobra.Command, ck *checkpoint.Checkpoint, plan *qformat.Plan, opt mixq.Options, in, out string, ef *exportFlags, force bool) error {
	var gx *ggufexport.Export
	var cx *ctensors.Export
	var err error
	switch ef.format {
	case formatGGUF:
		gx, err = ggufexport.Plan(ck.Config, ggufexport.SourcesOfPlan(plan), ef.ggufOptions(in))
	case formatCT:
		cx, err = planCompressedTensors(ck, ctensorsOfPlan(plan), ef)
	default:
		return usagef("--format %q: want mixq|%s", ef.format, formatChoice)
	}
	if err != nil {
		return err
	}
	tmp, err := safeout.NewDir(filepath.Clean(out) + ".mixq")
	if err != nil {
		return err
	}
	defer tmp.Abort()
	q := filepath.Join(tmp.Path(), "mixq")
	opt.Force = false
	if _, err := mixq.Quantize(c.Context(), ck, plan, q, opt); err != nil {
		return err
	}
	m, err := mixq.OpenQuantized(q)
	if err != nil {
		return err
	}
	defer m.Close()
	var notes []string
	var size int64
	switch {
	case gx != nil:
		notes, size = gx.Notices, gx.Layout.Size
	case cx != nil:
		notes, size = cx.Notices, cx.Layout.TotalBytes()
	}
	for _, n := range notes {
		fmt.Fprintf(notices, "mixq: %s\n", n)
	}
	bar := newProgress(c.ErrOrStderr(), size, "export "+ef.format)
	add := func(n int64) {
		if bar != nil {
			bar.Add64(n)
		}
	}
	if gx != nil {
		err = gx.Write(c.Context(), m, out, add)
	} else {
		err = cx.Write(c.Context(), m, out, force, func(_ string, n int64) { add(n) })
	}
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "wrote %s (%s) with policy %s: %d bytes (%s)\n", out, ef.format, opt.Policy.Name(), size, human(size))
	return nil
}
