package policy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// FuzzRules fuzzes the rules JSON file (LoadRules) and, with the same
// bytes, the --rule flag (ParseRule). Properties: every refusal is an
// input error (the file's naming the file); an accepted rule has a
// non-empty pattern that compiles and a valid precision; accepted rules
// written back, as {"rules": [...]} and as a bare list, load identically;
// and an accepted flag reparses from its String form.
func FuzzRules(f *testing.F) {
	for _, s := range []string{
		`{"rules":[{"pattern":"mlp\\.down_proj","precision":"int8"},{"pattern":"lm_head","precision":"f16"}]}`,
		`[{"pattern":"experts\\.","precision":"int4"},{"pattern":".","precision":"f32"}]`,
		`[{"pattern":"(","precision":"int4"}]`,
		`[{"pattern":"","precision":"int4"}]`,
		`[{"pattern":"a","precision":"int3"}]`,
		`[{"pattern":"a","precision":"int4","extra":1}]`,
		`{"rules":{}}`, `[`, `null`, ``,
		`mlp\.down_proj=int8`, `a=b=f16`, `=int4`, `x=`,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "rules.json")
	f.Fuzz(func(t *testing.T, raw []byte) {
		if r, err := ParseRule(string(raw)); err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
		} else {
			require.True(t, r.Precision.Valid())
			back, err := ParseRule(r.String())
			require.NoError(t, err)
			require.Equal(t, r.Pattern, back.Pattern)
			require.Equal(t, r.Precision, back.Precision)
		}

		require.NoError(t, os.WriteFile(path, raw, 0o644))
		rules, err := LoadRules(path)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			require.ErrorContains(t, err, path)
			return
		}
		type plain struct {
			Pattern   string          `json:"pattern"`
			Precision quant.Precision `json:"precision"`
		}
		var list []plain
		for _, r := range rules {
			require.NotEmpty(t, r.Pattern)
			require.True(t, r.Precision.Valid())
			require.Equal(t, "file:"+path, r.Source)
			r.Match("model.layers.0.mlp.up_proj.weight") // compiled: must not panic
			list = append(list, plain{r.Pattern, r.Precision})
		}
		for _, form := range []any{map[string]any{"rules": list}, list} {
			b, err := json.Marshal(form)
			require.NoError(t, err)
			if list == nil {
				continue // an empty list marshals as null, which is not a rules file
			}
			require.NoError(t, os.WriteFile(path, b, 0o644))
			again, err := LoadRules(path)
			require.NoError(t, err)
			require.Len(t, again, len(rules))
			for i := range rules {
				require.Equal(t, rules[i].Pattern, again[i].Pattern)
				require.Equal(t, rules[i].Precision, again[i].Precision)
			}
		}
	})
}
