package importance

import (
	"encoding/json"

	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// Normalization names the per-signal normalization in reports.
const Normalization = "log-min-max: (ln r − min ln r) / (max ln r − min ln r) over the matrices with the signal"

// Report explains a policy's choice tensor by tensor. It holds no map
// iteration order, times or paths beyond the inputs, so the same inputs
// give byte-identical JSON.
type Report struct {
	Policy        string `json:"policy"`
	Backend       string `json:"backend"`
	GroupSize     int    `json:"group_size"`
	Normalization string `json:"normalization"`
	ErrorMetric   string `json:"error_metric"`
	// Rounding is how the INT8/INT4 candidates were rounded ("rtn" or
	// "search"); GroupSizes their group sizes.
	Rounding   string `json:"rounding"`
	GroupSizes []int  `json:"group_sizes"`
	// Loss says what the candidates' losses are; Sensitivity how the KL
	// was measured when they are predicted KL divergences.
	Loss        string              `json:"loss"`
	Sensitivity *SensitivitySummary `json:"sensitivity,omitempty"`
	Signals     []SignalUse         `json:"signals"`
	Notices     []string            `json:"notices,omitempty"`
	Counts      []Count             `json:"counts"`
	DataBytes   int64               `json:"data_bytes"`
	Budget      *BudgetSummary      `json:"budget,omitempty"`
	// Dynamic is set for the dynamic policy.
	Dynamic *DynamicSummary `json:"dynamic,omitempty"`
	Tensors []TensorReport  `json:"tensors"`
}

// SignalUse says how one signal entered the scores.
type SignalUse struct {
	Signal Signal  `json:"signal"`
	Weight float64 `json:"weight"`
	Used   bool    `json:"used"`
}

// Count is the number of tensors stored at one precision ("keep" for kept).
type Count struct {
	Precision string `json:"precision"`
	Tensors   int    `json:"tensors"`
}

// DynamicSummary gives the dynamic policy's shares and counts.
type DynamicSummary struct {
	High  float64 `json:"high"`
	Low   float64 `json:"low"`
	N     int     `json:"ranked"`
	NHigh int     `json:"f16"`
	NMid  int     `json:"int8"`
	NLow  int     `json:"int4"`
}

// TensorReport is one tensor's line of the report.
type TensorReport struct {
	Name      string           `json:"name"`
	Shape     []int64          `json:"shape"`
	Component policy.Component `json:"component"`
	Matrix    bool             `json:"matrix"`
	Layer     string           `json:"calibration_layer,omitempty"`
	Signals   []SignalScore    `json:"signals,omitempty"`
	Score     float64          `json:"score"`
	Rank      int              `json:"rank,omitempty"`
	// Precision is the chosen precision, or "keep".
	Precision string `json:"precision"`
	// GroupSize is the chosen group size of an INT8/INT4 choice.
	GroupSize int `json:"group_size,omitempty"`
	// Rule and Source name the user rule that pinned the tensor, if any.
	Rule   string `json:"rule,omitempty"`
	Source string `json:"source,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Bytes is the tensor data written for the choice, headers excluded.
	Bytes int64 `json:"bytes"`
	// MeasuredKL and Sensitivity as in TensorScore.
	MeasuredKL  float64     `json:"measured_kl,omitempty"`
	Sensitivity float64     `json:"sensitivity,omitempty"`
	Candidates  []Candidate `json:"candidates,omitempty"`
}

// Report runs p over every tensor of the analysis and explains each choice.
func (a *Analysis) Report(p Policy) *Report {
	r := &Report{
		Policy: p.Name(), Backend: a.Backend, GroupSize: a.GroupSize,
		Rounding: a.Rounding, GroupSizes: a.GroupSizes, Sensitivity: a.Sensitivity,
		Loss:          "(1 + score) × elements × relative error",
		Normalization: Normalization,
		Notices:       append([]string(nil), a.Notices...),
	}
	r.ErrorMetric = "plain squared error Σ(w − ŵ)² (no calibration)"
	if a.Calibrated {
		r.ErrorMetric = "Σ_c E[x_c²]·Σ_r (w_rc − ŵ_rc)² with E[x²] = var + mean² from calibration; plain squared error for matrices without a calibration layer"
	}
	if a.Sensitivity != nil {
		r.Loss = "predicted KL divergence: sensitivity × relative error, the sensitivity being the KL measured with the matrix alone at the reference candidate divided by that candidate's relative error"
	}
	for _, s := range Signals {
		r.Signals = append(r.Signals, SignalUse{Signal: s, Weight: a.Weights[s], Used: contains(a.Used, s)})
	}
	counts := map[string]int{}
	for _, t := range a.Tensors {
		d := p.Decide(policy.Tensor{Name: t.Name, Shape: t.Shape})
		tr := TensorReport{
			Name: t.Name, Shape: t.Shape, Component: t.Component, Matrix: t.Matrix, Layer: t.Layer,
			Signals: t.Signals, Score: t.Score, Rank: t.Rank, Candidates: t.Candidates,
			MeasuredKL: t.MeasuredKL, Sensitivity: t.Sensitivity,
			Reason: d.Reason,
		}
		if d.Source != "dynamic" && d.Source != "budget" {
			tr.Rule, tr.Source = d.Rule, d.Source
		}
		if d.Keep || t.Elements() == 0 {
			tr.Precision = qformat.Keep
			tr.Bytes = t.Elements() * int64(t.DType.Size())
		} else {
			tr.Precision = d.Precision.String()
			cols := int(t.Shape[len(t.Shape)-1])
			g := d.GroupSize
			if g == 0 {
				g = a.GroupSize
			}
			if d.Precision.Quantized() {
				tr.GroupSize = g
			}
			tr.Bytes = dataBytes(d.Precision, int(t.Elements()/int64(cols)), cols, g)
		}
		counts[tr.Precision]++
		r.DataBytes += tr.Bytes
		r.Tensors = append(r.Tensors, tr)
	}
	for _, q := range quant.Precisions {
		if n := counts[q.String()]; n > 0 {
			r.Counts = append(r.Counts, Count{q.String(), n})
		}
	}
	if n := counts[qformat.Keep]; n > 0 {
		r.Counts = append(r.Counts, Count{qformat.Keep, n})
	}
	switch v := p.(type) {
	case *Budget:
		r.Budget = v.Summary()
	case *Dynamic:
		r.Dynamic = &DynamicSummary{High: v.High, Low: v.Low, N: v.N, NHigh: v.NHigh, NMid: v.NMid, NLow: v.NLow}
	}
	return r
}

// JSON is the report as indented JSON with a final newline.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func contains(s []Signal, x Signal) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
