package importance

import (
	"fmt"
	"math"
	"sort"

	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
)

// Default shares of the dynamic policy.
const (
	DefaultHigh = 0.2
	DefaultLow  = 0.4
)

// Policy is what mixq.Options.Policy accepts.
type Policy interface {
	Name() string
	Decide(policy.Tensor) policy.Decision
}

// pins are the user's rules, the only rules the importance policies honour.
type pins struct {
	rules []policy.Rule
	tied  string
}

func newPins(rules []policy.Rule, tied string) pins {
	return pins{rules: append([]policy.Rule(nil), rules...), tied: tied}
}

func (p pins) first(name string) (policy.Rule, bool) {
	for i := range p.rules {
		if p.rules[i].Match(name) {
			return p.rules[i], true
		}
	}
	return policy.Rule{}, false
}

// match returns the rule that pins a tensor: the first user rule matching
// its name; for a tied embedding, a rule matching lm_head.weight counts too
// and the wider of the two wins, as in the static policy.
func (p pins) match(name string) (policy.Rule, bool) {
	r, ok := p.first(name)
	if name != "" && name == p.tied {
		if h, hok := p.first("lm_head.weight"); hok && (!ok || policy.Wider(h.Precision, r.Precision)) {
			r, ok = h, true
		}
	}
	return r, ok
}

// decide handles what every importance policy decides the same way: rank
// 0 and 1 tensors are kept, pinned tensors take their rule. done is false
// when the policy must choose.
func (p pins) decide(t policy.Tensor) (d policy.Decision, done bool) {
	d = policy.Decision{Name: t.Name, Component: policy.Classify(t.Name)}
	if len(t.Shape) < 2 {
		d.Keep = true
		d.Reason = fmt.Sprintf("rank-%d tensors are kept as they are", len(t.Shape))
		return d, true
	}
	if r, ok := p.match(t.Name); ok {
		d.Precision, d.Rule, d.Source = r.Precision, r.String(), r.Source
		d.Reason = "pinned by a user rule"
		return d, true
	}
	return d, false
}

// widen returns p, or the next wider precision the matrix can hold.
func widen(t *TensorScore, p quant.Precision) quant.Precision {
	order := []quant.Precision{quant.INT4, quant.INT8, quant.F16, quant.F32}
	for i, q := range order {
		if q == p {
			for _, w := range order[i:] {
				if t.feasible(w) {
					return w
				}
			}
		}
	}
	return quant.F32
}

// Dynamic ranks the unpinned matrices by importance and gives the top
// share F16, the bottom share INT4 and the rest INT8. See the package
// documentation for the counts, ties and pins.
type Dynamic struct {
	High, Low float64
	// N is the number of ranked (unpinned) matrices; NHigh, NMid and NLow
	// how many got F16, INT8 and INT4.
	N, NHigh, NMid, NLow int

	pins   pins
	chosen map[string]dynChoice
}

type dynChoice struct {
	p      quant.Precision
	reason string
}

// NewDynamic builds the dynamic policy. high and low are the shares of the
// unpinned matrices stored as F16 and INT4; both must lie in [0, 1] with
// high + low ≤ 1.
func NewDynamic(a *Analysis, rules []policy.Rule, high, low float64) (*Dynamic, error) {
	if !(high >= 0 && high <= 1) || !(low >= 0 && low <= 1) || high+low > 1+1e-12 {
		return nil, quant.InputError(fmt.Errorf("dynamic policy: shares high=%v low=%v: want 0 ≤ high, low ≤ 1 and high + low ≤ 1", high, low))
	}
	d := &Dynamic{High: high, Low: low, pins: newPins(rules, a.TiedHead), chosen: map[string]dynChoice{}}
	var ranked []*TensorScore
	for _, t := range a.Matrices() {
		if _, ok := d.pins.match(t.Name); !ok {
			ranked = append(ranked, t)
		}
	}
	sortByDamage(ranked)
	n := len(ranked)
	d.N = n
	d.NHigh, d.NLow = Counts(n, high, low)
	d.NMid = n - d.NHigh - d.NLow
	for i, t := range ranked {
		p, band := quant.INT8, "middle"
		switch {
		case i < d.NHigh:
			p, band = quant.F16, "top"
		case i >= n-d.NLow:
			p, band = quant.INT4, "bottom"
		}
		reason := fmt.Sprintf("predicted INT4 damage %.4g (importance %.4f × INT4 relative error), rank %d of %d unpinned matrices: %s band", Damage(t), t.Score, i+1, n, band)
		if q := widen(t, p); q != p {
			reason += fmt.Sprintf(" (%s cannot hold it: widened to %s)", p, q)
			p = q
		}
		d.chosen[t.Name] = dynChoice{p: p, reason: reason}
	}
	return d, nil
}

// Damage is what the dynamic policy ranks by: the damage predicted for
// storing the matrix at INT4 at the analysis's group size — the predicted
// KL divergence when the sensitivity was measured, else (1 + Score) ×
// RelError, the importance-weighted error the budget minimizes, per
// element. +Inf when INT4 cannot hold it.
//
// Why not the score alone (the seed's ranking): a tensor with strong
// signals may quantize almost losslessly and a quiet one badly; measured
// on minillama, ranking by score gave F16 to tensors whose INT4 error was
// already small (see bench/QUALITY.md for both rankings' results).
func Damage(t *TensorScore) float64 {
	c, ok := t.Candidate(quant.INT4)
	if !ok || !c.Feasible {
		return math.Inf(1)
	}
	if t.measured {
		return c.Loss // the predicted KL divergence
	}
	return (1 + t.Score) * c.RelError
}

// sortByDamage orders matrices by descending Damage, ties by descending
// score, then by name.
func sortByDamage(ts []*TensorScore) {
	dmg := make(map[*TensorScore]float64, len(ts))
	for _, t := range ts {
		dmg[t] = Damage(t)
	}
	sort.SliceStable(ts, func(i, j int) bool {
		if di, dj := dmg[ts[i]], dmg[ts[j]]; di != dj {
			return di > dj
		}
		if ts[i].Score != ts[j].Score {
			return ts[i].Score > ts[j].Score
		}
		return ts[i].Name < ts[j].Name
	})
}

// Counts is how many of n tensors the dynamic policy stores as F16 and as
// INT4: nHigh = round(high·n), nLow = round(low·n) (halves away from zero),
// and if rounding makes nHigh + nLow exceed n, nLow gives way (n − nHigh).
func Counts(n int, high, low float64) (nHigh, nLow int) {
	nHigh = min(n, int(math.Round(high*float64(n))))
	nLow = int(math.Round(low * float64(n)))
	if nHigh+nLow > n {
		nLow = n - nHigh
	}
	return nHigh, nLow
}

// Name is "dynamic".
func (d *Dynamic) Name() string { return "dynamic" }

// Decide keeps vectors, applies pins, and gives every ranked matrix its band's precision.
func (d *Dynamic) Decide(t policy.Tensor) policy.Decision {
	dec, done := d.pins.decide(t)
	if done {
		return dec
	}
	c, ok := d.chosen[t.Name]
	if !ok {
		dec.Keep = true
		dec.Reason = "not analysed (empty or not in the checkpoint analysed)"
		return dec
	}
	dec.Precision, dec.Source, dec.Reason = c.p, "dynamic", c.reason
	return dec
}
