package policy

import (
	"fmt"

	"github.com/mixq/mixq/quant"
)

// Tensor is what a policy sees of a tensor: its name and shape. Policies never
// read tensor data.
type Tensor struct {
	Name  string
	Shape []int64
}

// Decision is the outcome for one tensor.
type Decision struct {
	Name string `json:"name"`
	// Keep means the tensor is stored exactly as in the input (same dtype and
	// bytes); Precision is then meaningless.
	Keep      bool            `json:"keep,omitempty"`
	Precision quant.Precision `json:"precision,omitempty"`
	// GroupSize is the quantization group of an INT8/INT4 decision; 0
	// means the plan's group size (--group-size). The budget policy sets it
	// per tensor, choosing among several group sizes.
	GroupSize int       `json:"group_size,omitempty"`
	Component Component `json:"component"`
	// Rule is the rule that chose the precision, as REGEX=PRECISION, and
	// Source where it came from; Reason explains anything else (1-D, tied).
	Rule   string `json:"rule,omitempty"`
	Source string `json:"source,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Static is the rule-based policy.
type Static struct {
	Rules []Rule
	// TiedHead names the tensor that also serves as output head when the
	// checkpoint ties embeddings ("" when untied).
	TiedHead string
}

// NewStatic returns the static policy with user rules in front of the
// built-in ones.
func NewStatic(user []Rule) *Static {
	return &Static{Rules: append(append([]Rule(nil), user...), BuiltinRules()...)}
}

// match returns the first rule matching name.
func (s *Static) match(name string) (Rule, bool) {
	for i := range s.Rules {
		if s.Rules[i].Match(name) {
			return s.Rules[i], true
		}
	}
	return Rule{}, false
}

// Decide chooses the precision of one tensor.
func (s *Static) Decide(t Tensor) Decision {
	d := Decision{Name: t.Name, Component: Classify(t.Name)}
	if len(t.Shape) < 2 {
		d.Keep = true
		d.Reason = fmt.Sprintf("rank-%d tensors are kept as they are", len(t.Shape))
		return d
	}
	r, ok := s.match(t.Name)
	if !ok {
		// Only possible when a caller built Rules without a catch-all.
		d.Keep = true
		d.Reason = "no rule matched"
		return d
	}
	d.Precision, d.Rule, d.Source = r.Precision, r.String(), r.Source
	if t.Name == s.TiedHead {
		if h, ok := s.match("lm_head.weight"); ok && Wider(h.Precision, r.Precision) {
			d.Precision, d.Rule, d.Source = h.Precision, h.String(), h.Source
		}
		d.Reason = "tied embeddings: also the output head, so it takes the wider of the embedding and head rules"
	}
	return d
}

// Wider reports whether a stores more bits per weight than b.
func Wider(a, b quant.Precision) bool { return a.Bits() > b.Bits() }

// TiedHead returns the embedding tensor that doubles as the output head, or
// "" when the checkpoint has its own head. It looks at the tensors, not at
// config.json's tie_word_embeddings: a checkpoint with a token embedding and
// no head tensor can only produce logits through the embedding, and one with
// a head tensor does not use the embedding for output whatever the config says.
func TiedHead(names []string) string {
	var embed string
	hasHead := false
	for _, n := range names {
		switch Classify(n) {
		case Head:
			hasHead = true
		case Embeddings:
			if embed == "" && reTokenEmbed.MatchString(n) {
				embed = n
			}
		}
	}
	if hasHead {
		return ""
	}
	return embed
}

// Name identifies the policy in reports and quantization_config.
func (s *Static) Name() string { return "static" }
