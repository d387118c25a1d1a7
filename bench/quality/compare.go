package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/model"
)

// reference is the F32 model's side of every comparison, computed once:
// its logits on each evaluation sequence and its own statistics.
type reference struct {
	seqs   [][]int
	logits [][]float32 // per sequence, [len][vocab] position-major
	vocab  int
	res    *eval.Result
}

// newReference runs the F32 model once over seqs and keeps its logits.
func newReference(ctx context.Context, ref *model.Model, seqs [][]int) (*reference, error) {
	r := &reference{seqs: seqs, logits: make([][]float32, len(seqs)), vocab: ref.Config.Vocab}
	res, err := eval.EvaluateContext(ctx, ref, nil, seqs, eval.Options{
		Logits: func(i int, l []float32) { r.logits[i] = slices.Clone(l) },
	})
	if err != nil {
		return nil, err
	}
	r.res = res
	return r, nil
}

// compare scores q against the kept reference and returns what
// eval.Evaluate(ref, q, seqs) returns, with the same arithmetic in the same
// order (eval.LogSoftmax, eval.KL), so the numbers are identical
// (TestCompareMatchesEvaluate): q's perplexity from eval itself, and
// KL(F32 ‖ q) and top-1 agreement per predicted position from the two sets
// of logits.
func (r *reference) compare(ctx context.Context, q *model.Model) (*eval.Result, error) {
	if q.Config.Vocab != r.vocab {
		return nil, fmt.Errorf("vocabularies differ: %d vs %d", r.vocab, q.Config.Vocab)
	}
	kls := make([]float64, 0, r.res.Scored)
	lpR, lpQ := make([]float64, r.vocab), make([]float64, r.vocab)
	agree := 0
	qres, err := eval.EvaluateContext(ctx, q, nil, r.seqs, eval.Options{
		// eval hands out each sequence's logits in the order in which it
		// scores them, which is the order its KL sum runs in.
		Logits: func(i int, lq []float32) {
			lr, V := r.logits[i], r.vocab
			for p := 0; p+1 < len(r.seqs[i]); p++ {
				rl, ql := lr[p*V:(p+1)*V], lq[p*V:(p+1)*V]
				kls = append(kls, eval.KL(eval.LogSoftmax(lpR, rl), eval.LogSoftmax(lpQ, ql)))
				if eval.Argmax(rl) == eval.Argmax(ql) {
					agree++
				}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	res := &eval.Result{Sequences: len(r.seqs), Scored: r.res.Scored, Original: r.res.Original}
	if len(kls) != res.Scored || qres.Scored != res.Scored {
		return nil, fmt.Errorf("scored %d and %d positions, the reference %d", len(kls), qres.Scored, res.Scored)
	}
	res.Compared(qres.Original, kls, agree)
	return res, nil
}
