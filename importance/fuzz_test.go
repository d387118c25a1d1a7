package importance

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// fuzzDTypes are the dtypes a fuzzed tensor may claim: the ones the readers
// accept and a few they must refuse.
var fuzzDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.F64, safetensors.I64, safetensors.I8, safetensors.BOOL}

// fuzzFile writes a safetensors file of the given specs, each tensor filled
// by repeating data (zeros when empty), without fsync (the fuzzer writes
// thousands). It returns false when the container itself cannot hold the
// specs (that is the safetensors fuzzer's business).
func fuzzFile(t *testing.T, path string, specs []safetensors.Spec, md map[string]string, data []byte) bool {
	t.Helper()
	hdr, err := safetensors.EncodeHeader(specs, md)
	if err != nil {
		return false
	}
	var n int64
	for _, s := range specs {
		n += s.Bytes()
	}
	if n > 1<<20 {
		return false
	}
	body := make([]byte, n)
	if len(data) > 0 {
		for i := range body {
			body[i] = data[i%len(data)]
		}
	}
	require.NoError(t, os.WriteFile(path, append(hdr, body...), 0o644))
	return true
}

func requireFiniteStats(t *testing.T, s *CalibStats) {
	t.Helper()
	for _, n := range s.Names() {
		st := s.Layers[n]
		require.GreaterOrEqual(t, st.Count, int64(0), n)
		require.Len(t, st.M2, len(st.Mean))
		for c := range st.Mean {
			require.False(t, math.IsNaN(st.Mean[c]) || math.IsInf(st.Mean[c], 0), "layer %s mean[%d] = %v", n, c, st.Mean[c])
			require.False(t, math.IsNaN(st.M2[c]) || math.IsInf(st.M2[c], 0) || st.M2[c] < 0, "layer %s M2[%d] = %v", n, c, st.M2[c])
		}
	}
}

// FuzzCalibrationFile fuzzes the two calibration files Read accepts: a
// statistics file (stats true: NAME.mean, NAME.m2, NAME.count with fuzzed
// dtypes and lengths) and an activation dump (one tensor NAME [tokens,
// in]). Properties: every refusal is an input error; accepted statistics
// are finite with M2 ≥ 0; an activation dump counts its tokens; and
// accepted statistics written with Write read back bit for bit.
func FuzzCalibrationFile(f *testing.F) {
	f.Add(true, "model.layers.0.mlp.up_proj", uint8(0), uint8(3), uint8(3), uint8(4), []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
	f.Add(true, "l", uint8(3), uint8(2), uint8(2), uint8(4), []byte{1, 2, 3})
	f.Add(true, "l", uint8(3), uint8(2), uint8(3), uint8(4), []byte{0xff})
	f.Add(false, "model.layers.0.self_attn.q_proj", uint8(0), uint8(4), uint8(8), uint8(0), []byte{0, 0, 0x80, 0x3f})
	f.Add(false, "a", uint8(1), uint8(2), uint8(3), uint8(0), []byte{0x00, 0x7c}) // F16 +Inf
	f.Add(false, "a", uint8(2), uint8(0), uint8(3), uint8(0), []byte{})
	f.Add(false, "a", uint8(4), uint8(2), uint8(2), uint8(0), []byte{1})
	f.Add(false, "", uint8(1), uint8(64), uint8(1), uint8(2), []byte("0")) // a nameless tensor: was not an input error
	dir := f.TempDir()
	path, back := filepath.Join(dir, "calib.safetensors"), filepath.Join(dir, "back.safetensors")
	f.Fuzz(func(t *testing.T, stats bool, name string, dt, d0, d1, d2 uint8, data []byte) {
		var specs []safetensors.Spec
		var md map[string]string
		if stats {
			// dt picks the dtypes of mean, m2 and count in turn.
			pick := func(k int) safetensors.DType {
				if k == 2 && dt%3 == 0 {
					return safetensors.I64
				}
				if dt%3 == 0 {
					return safetensors.F64
				}
				return fuzzDTypes[(int(dt)/3+k)%len(fuzzDTypes)]
			}
			specs = []safetensors.Spec{
				{Name: name + meanSuffix, DType: pick(0), Shape: []int64{int64(d0)}},
				{Name: name + m2Suffix, DType: pick(1), Shape: []int64{int64(d1)}},
				{Name: name + countSuffix, DType: pick(2), Shape: []int64{int64(d2 % 3)}},
			}
			md = map[string]string{CalibrationKey: StatsFormat}
		} else {
			specs = []safetensors.Spec{{Name: name, DType: fuzzDTypes[int(dt)%len(fuzzDTypes)], Shape: []int64{int64(d0), int64(d1)}}}
			if d2%2 == 1 {
				md = map[string]string{CalibrationKey: ActivationsFormat}
			}
		}
		if !fuzzFile(t, path, specs, md, data) {
			return
		}
		s, err := Read([]string{path}, cpu.New(1))
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			return
		}
		requireFiniteStats(t, s)
		if !stats && d0 > 0 && d1 > 0 {
			require.Equal(t, []string{name}, s.Names())
			require.Equal(t, int64(d0), s.Layers[name].Count)
		}
		require.NoError(t, s.Write(back))
		again, err := ReadStats(back)
		require.NoError(t, err)
		requireSameStats(t, s, again)
	})
}

// FuzzGradients fuzzes the gradients file of Analyze against a fixed
// checkpoint (synthCheckpoint): the tensor's name, dtype, shape and data.
// Properties: every refusal is an input error; when accepted, a matrix
// has a gradient signal exactly when the file holds it with its shape,
// and every signal and candidate error is finite with the normalized
// signals in [0, 1].
func FuzzGradients(f *testing.F) {
	f.Add("model.layers.0.mlp.up_proj.weight", uint8(0), uint8(24), uint8(16), []byte{0, 0, 0x80, 0x3f})
	f.Add("model.layers.0.mlp.up_proj.weight", uint8(1), uint8(24), uint8(16), []byte{0x00, 0xbc}) // F16 -1
	f.Add("model.layers.0.mlp.up_proj.weight", uint8(0), uint8(24), uint8(16), []byte{0, 0, 0xc0, 0x7f})
	f.Add("model.layers.0.mlp.up_proj.weight", uint8(2), uint8(16), uint8(24), []byte{1})
	f.Add("model.layers.0.self_attn.k_proj.weight", uint8(3), uint8(8), uint8(16), []byte{1})
	f.Add("not.in.the.checkpoint", uint8(0), uint8(2), uint8(2), []byte{})
	ck, _ := synthCheckpoint(f)
	dir := f.TempDir()
	path := filepath.Join(dir, "grads.safetensors")
	f.Fuzz(func(t *testing.T, name string, dt, d0, d1 uint8, data []byte) {
		specs := []safetensors.Spec{{Name: name, DType: fuzzDTypes[int(dt)%len(fuzzDTypes)], Shape: []int64{int64(d0), int64(d1)}}}
		if !fuzzFile(t, path, specs, nil, data) {
			return
		}
		a, err := Analyze(ck, Options{Grads: path, Backend: cpu.New(1), GroupSize: 8})
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			return
		}
		for _, ts := range a.Matrices() {
			has := slices.ContainsFunc(ts.Signals, func(s SignalScore) bool { return s.Signal == GradientSignal })
			want := ts.Name == name && slices.Equal(ts.Shape, specs[0].Shape)
			require.Equal(t, want, has, ts.Name)
			for _, s := range ts.Signals {
				require.False(t, math.IsNaN(s.Raw) || math.IsInf(s.Raw, 0) || s.Raw < 0, "%s %s raw %v", ts.Name, s.Signal, s.Raw)
				require.True(t, s.Normalized >= 0 && s.Normalized <= 1, "%s %s normalized %v", ts.Name, s.Signal, s.Normalized)
			}
			for _, c := range ts.Candidates {
				require.False(t, math.IsNaN(c.Error) || math.IsInf(c.Error, 0), "%s %v error %v", ts.Name, c.Precision, c.Error)
			}
		}
	})
}
