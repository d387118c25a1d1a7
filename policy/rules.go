package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/quant"
)

// Rule maps tensor names matching Pattern (Go RE2 syntax, unanchored) to a
// precision.
type Rule struct {
	Pattern   string          `json:"pattern"`
	Precision quant.Precision `json:"precision"`
	// Source says where the rule came from: "builtin:<name>", "flag" or
	// "file:<path>". --explain prints it.
	Source string `json:"source,omitempty"`

	re *regexp.Regexp
}

// NewRule compiles a rule.
func NewRule(pattern string, p quant.Precision, source string) (Rule, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return Rule{}, quant.InputError(fmt.Errorf("rule %q: %v", pattern, err))
	}
	if !p.Valid() {
		return Rule{}, quant.InputError(fmt.Errorf("rule %q: invalid precision", pattern))
	}
	return Rule{Pattern: pattern, Precision: p, Source: source, re: re}, nil
}

// Match reports whether the rule applies to a tensor name.
func (r *Rule) Match(name string) bool {
	if r.re == nil {
		r.re = regexp.MustCompile(r.Pattern)
	}
	return r.re.MatchString(name)
}

// String renders the rule as the --rule flag spells it.
func (r Rule) String() string { return r.Pattern + "=" + r.Precision.String() }

// ParseRule parses the --rule flag syntax REGEX=PRECISION. The split is at
// the last '=', so patterns may contain '='.
func ParseRule(s string) (Rule, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 || i == len(s)-1 {
		return Rule{}, quant.InputError(fmt.Errorf("rule %q: want REGEX=PRECISION, e.g. 'mlp\\.down_proj=int8'", s))
	}
	p, err := quant.ParsePrecision(s[i+1:])
	if err != nil {
		return Rule{}, quant.InputError(fmt.Errorf("rule %q: %v", s, err))
	}
	return NewRule(s[:i], p, "flag")
}

// rulesFile is the JSON form of a rules file: either {"rules": [...]} or a
// bare list of {"pattern": ..., "precision": ...} objects.
type rulesFile struct {
	Rules []Rule `json:"rules"`
}

// MaxRulesFile bounds a rules file: real ones are a few lines, and a larger
// file, or a FIFO or device that may never end, is refused unread.
const MaxRulesFile = 64 << 20

// LoadRules reads an ordered list of rules from a JSON file.
func LoadRules(path string) ([]Rule, error) {
	b, err := infile.ReadFile(path, MaxRulesFile, "rules file")
	if err != nil {
		return nil, err
	}
	var rules []Rule
	dec := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		err = dec(&rules)
	} else {
		var f rulesFile
		err = dec(&f)
		rules = f.Rules
	}
	if err != nil {
		return nil, quant.InputError(fmt.Errorf("rules file %s: %v", path, err))
	}
	out := make([]Rule, 0, len(rules))
	for i, r := range rules {
		if r.Pattern == "" {
			return nil, quant.InputError(fmt.Errorf("rules file %s: rule %d has no pattern", path, i))
		}
		nr, err := NewRule(r.Pattern, r.Precision, "file:"+path)
		if err != nil {
			return nil, quant.InputError(fmt.Errorf("rules file %s: rule %d: %w", path, i, err))
		}
		out = append(out, nr)
	}
	return out, nil
}

// BuiltinRules returns the seed design's component rules, in priority order.
func BuiltinRules() []Rule {
	mk := func(name, pattern string, p quant.Precision) Rule {
		r, err := NewRule(pattern, p, "builtin:"+name)
		if err != nil {
			panic(err) // the patterns are constants
		}
		return r
	}
	return []Rule{
		// Mixtral block_sparse_moe.experts.N.w1|w2|w3, Qwen/DeepSeek
		// mlp.experts.N.*, and any other "experts" (shared experts included).
		mk("moe-experts", `(^|\.)(experts|shared_experts?)\.|block_sparse_moe\.experts`, quant.INT4),
		mk("output-head", `(^|\.)lm_head\.|^output\.weight$|(^|\.)embed_out\.`, quant.F16),
		mk("embeddings", `embed_tokens|(^|\.)wte\.|(^|\.)wpe\.|tok_embeddings|word_embeddings`, quant.F16),
		mk("core-attention", `bk_core|self_attn\.|(^|\.)attention\.|(^|\.)attn\.`, quant.INT8),
		mk("default", `.`, quant.INT8),
	}
}
