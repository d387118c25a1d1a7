package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// tokenFlags choose the evaluation sequences: a JSON file, or samples drawn
// from the original model.
type tokenFlags struct {
	tokens         string
	sample, seqLen int
	seed           uint64
}

func (f *tokenFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.tokens, "tokens", "", `JSON file: {"input_tokens": [...]} or {"sequences": [[...], ...]}`)
	c.Flags().IntVar(&f.sample, "sample", 0, "draw N sequences from the original model at temperature 1")
	c.Flags().IntVar(&f.seqLen, "seq-len", 128, "length of sampled sequences")
	c.Flags().Uint64Var(&f.seed, "seed", 1, "sampling seed")
}

// sequences loads or samples the token sequences, and refuses (exit 2)
// sequences the model cannot run: each needs at least minLen tokens, no
// more than max_position_embeddings, all inside the vocabulary (see
// eval.CheckSequences). Sampling shows a progress bar on a terminal and
// stops when ctx is done.
func (f *tokenFlags) sequences(ctx context.Context, m *model.Model, minLen int, stderr io.Writer) ([][]int, error) {
	switch {
	case f.tokens != "" && f.sample > 0:
		return nil, usagef("give --tokens or --sample, not both")
	case f.tokens != "":
		seqs, err := readTokens(f.tokens)
		if err != nil {
			return nil, err
		}
		if err := eval.CheckSequences(m, seqs, minLen); err != nil {
			return nil, fmt.Errorf("%s: %w", f.tokens, err)
		}
		return seqs, nil
	case f.sample > 0:
		if f.seqLen < minLen {
			return nil, usagef("--seq-len %d: need at least %d", f.seqLen, minLen)
		}
		bar := newCounter(stderr, int64(f.sample)*int64(f.seqLen-1), "sample", "tokens")
		seqs, err := eval.SampleContext(ctx, m, f.sample, f.seqLen, m.Config.BOS, f.seed, bar.add)
		bar.end(err)
		return seqs, err
	}
	return nil, usagef("give --tokens FILE or --sample N")
}

// maxTokensFile bounds a token file. A JSON token takes at least 2 bytes
// ("7,") and becomes an 8-byte int, so 256 MiB of JSON can hold up to 128M
// tokens, about 1 GiB once decoded: more than any evaluation or calibration
// set needs (WikiText-103 is about 120M tokens), yet an amount of memory a
// workstation has to spare. A larger file, or a FIFO or device that may never
// end, is refused before it is read.
const maxTokensFile = 256 << 20

// readTokens reads {"input_tokens": [...]} or {"sequences": [[...]]}.
func readTokens(path string) ([][]int, error) {
	b, err := infile.ReadFile(path, maxTokensFile, "token list")
	if err != nil {
		return nil, err
	}
	var v struct {
		InputTokens []int   `json:"input_tokens"`
		Sequences   [][]int `json:"sequences"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, quant.InputError(fmt.Errorf("%s: %v", path, err))
	}
	seqs := v.Sequences
	if len(v.InputTokens) > 0 {
		seqs = append([][]int{v.InputTokens}, seqs...)
	}
	if len(seqs) == 0 {
		return nil, quant.InputError(fmt.Errorf("%s: no input_tokens or sequences", path))
	}
	return seqs, nil
}

func newEvalCmd() *cobra.Command {
	var (
		tf                  tokenFlags
		ref, qpath, backend string
		logitsOut           string
		asJSON, force       bool
	)
	c := &cobra.Command{
		Use:   "eval --model IN [--quantized Q] (--tokens F.json | --sample N --seq-len L)",
		Short: "Perplexity, KL divergence and top-1 agreement of a quantized model against the original",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if ref == "" {
				return usagef("eval needs --model IN")
			}
			// Refuse a bad --logits-out before loading anything.
			if logitsOut != "" {
				if err := checkOutput(logitsOut, safeout.Float32, force, modelInputs(ref, qpath, tf.tokens)...); err != nil {
					return err
				}
			}
			be, err := openBackend(backend)
			if err != nil {
				return err
			}
			m, err := model.Load(ref, be)
			if err != nil {
				return err
			}
			defer m.Close()
			var q *model.Model
			if qpath != "" {
				if q, err = model.Load(qpath, be); err != nil {
					return err
				}
				defer q.Close()
			}
			seqs, err := tf.sequences(c.Context(), m, 2, c.ErrOrStderr())
			if err != nil {
				return err
			}
			passes := int64(1)
			if q != nil {
				passes = 2
			}
			bar := newCounter(c.ErrOrStderr(), passes*int64(eval.Tokens(seqs)), "eval", "tokens")
			opt := eval.Options{Progress: bar.add}
			var lw *logitWriter
			if logitsOut != "" {
				if lw, err = newLogitWriter(logitsOut); err != nil {
					return err
				}
				defer lw.abort()
				opt.Logits = lw.write
			}
			res, err := eval.EvaluateContext(c.Context(), m, q, seqs, opt)
			bar.end(err)
			if err != nil {
				return err
			}
			if lw != nil {
				if err := lw.close(); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), res)
			}
			w := c.OutOrStdout()
			fmt.Fprintf(w, "sequences %d, scored positions %d, backend %s\n", res.Sequences, res.Scored, be.Name())
			fmt.Fprintf(w, "original   perplexity %.4f  (%.0f tokens/s)\n", res.Original.Perplexity, res.Original.TokensPerSec)
			if res.Quantized != nil {
				fmt.Fprintf(w, "quantized  perplexity %.4f  (%+.2f%%, %.0f tokens/s)\n", res.Quantized.Perplexity, res.DeltaPerplexityPct, res.Quantized.TokensPerSec)
				fmt.Fprintf(w, "KL(original‖quantized) mean %.5f  p99 %.5f  max %.5f\n", res.KLMean, res.KLP99, res.KLMax)
				fmt.Fprintf(w, "top-1 agreement %.2f%%\n", 100*res.Top1Agreement)
			}
			return nil
		},
	}
	tf.register(c)
	c.Flags().StringVar(&ref, "model", "", "original checkpoint")
	c.Flags().StringVar(&qpath, "quantized", "", "mixq checkpoint to compare with the original")
	c.Flags().StringVar(&backend, "backend", "auto", backendHelp)
	c.Flags().StringVar(&logitsOut, "logits-out", "", "write the original model's logits (little-endian float32, position-major, sequences in order)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&force, "force", false, "replace an existing --logits-out file")
	return c
}

// logitWriter streams logits to a temporary file renamed on success.
type logitWriter struct {
	path string
	f    *os.File
	w    *bufio.Writer
	buf  []byte
	err  error
}

func newLogitWriter(path string) (*logitWriter, error) {
	f, err := safeout.CreateTemp(path)
	if err != nil {
		return nil, err
	}
	return &logitWriter{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (l *logitWriter) write(_ int, logits []float32) {
	if l.err != nil {
		return
	}
	if cap(l.buf) < 4*len(logits) {
		l.buf = make([]byte, 4*len(logits))
	}
	b := l.buf[:4*len(logits)]
	for i, v := range logits {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	_, l.err = l.w.Write(b)
}

func (l *logitWriter) close() error {
	if l.err == nil {
		l.err = l.w.Flush()
	}
	if l.err == nil {
		l.err = safeout.CommitFile(l.f, l.path)
	} else {
		safeout.AbortFile(l.f)
	}
	l.f = nil
	return l.err
}

func (l *logitWriter) abort() {
	if l.f != nil {
		safeout.AbortFile(l.f)
	}
}
