package tokenizer

import "testing"

// FuzzModelProto: any bytes given as tokenizer.model give pieces or an
// error, never a panic.
func FuzzModelProto(f *testing.F) {
	var m []byte
	m = pbBytes(m, fieldPieces, pbFloat(pbBytes(nil, fieldPiece, []byte("<s>")), fieldScore, -1))
	m = pbBytes(m, fieldTrainerSpec, pbVarint(nil, fieldBosID, 1))
	f.Add(m)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseModelProto(b)
		if err == nil && (len(v.Tokens) != len(v.Scores) || len(v.Tokens) != len(v.Types)) {
			t.Fatalf("%d tokens, %d scores, %d types", len(v.Tokens), len(v.Scores), len(v.Types))
		}
	})
}
