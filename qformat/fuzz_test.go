package qformat_test

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// fill repeats src (zeros when empty) to n bytes.
func fill(src []byte, n int) []byte {
	out := make([]byte, n)
	if len(src) > 0 {
		for i := range out {
			out[i] = src[i%len(src)]
		}
	}
	return out
}

// FuzzOpen fuzzes the quantized-format reader one layer above the
// safetensors container (FuzzParseHeader covers that): a record, codes and
// scales of any dtype-consistent shape. Properties: every refusal is an
// input error; whatever Open and Codes accept decodes to finite weights
// with |w| ≤ qmax·scale, and quantizing those weights again with the
// stored scales gives back the stored codes byte for byte (the format's
// round trip: w = q·s exactly, so rint(w·(1/s)) = q).
func FuzzOpen(f *testing.F) {
	f.Add(`{"precision":"int8","group_size":4,"dtype":"F32","shape":[2,5]}`, false, uint8(2), uint8(5), uint8(2),
		[]byte{1, 0x81, 127, 0, 5}, []byte{0x00, 0x3c, 0x00, 0x38})
	f.Add(`{"precision":"int4","group_size":2,"dtype":"BF16","shape":[2,5]}`, true, uint8(2), uint8(3), uint8(3),
		[]byte{0x79, 0x10, 0x07}, []byte{0x00, 0x3c, 0x01, 0x00})
	f.Add(`{"precision":"int4","group_size":128,"dtype":"F16","shape":[1,2,64]}`, true, uint8(2), uint8(32), uint8(1),
		[]byte{0x77, 0x99, 0x12}, []byte{0xff, 0x7b})
	f.Add(`{"precision":"int8","group_size":4,"dtype":"F32","shape":[3,6148914691236517206,2]}`, false, uint8(2), uint8(2), uint8(1),
		[]byte{1}, []byte{0x00, 0x3c})
	f.Add(`{"precision":"int8","group_size":1,"dtype":"F32","shape":[1,1]}`, false, uint8(1), uint8(1), uint8(1),
		[]byte{0x80}, []byte{0x00, 0x7e}) // -128 and a NaN scale
	f.Add(`{"precision":"int8","group_size":2,"dtype":"F32","shape":[1,2]}`, false, uint8(1), uint8(2), uint8(1),
		[]byte{3}, []byte{0x00, 0x00}) // zero scale over non-zero codes
	f.Add(`{"precision":"keep","dtype":"F32","shape":[2,5]}`, false, uint8(2), uint8(5), uint8(2), []byte{}, []byte{})
	f.Add(`{"precision":"int4","group_size":2,"dtype":"F32","shape":[2,5],"extra":1}`, true, uint8(2), uint8(3), uint8(3), []byte{}, []byte{})
	f.Add(`not json`, false, uint8(0), uint8(0), uint8(0), []byte{}, []byte{})
	be := cpu.New(1)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, rec string, int4 bool, rows, rowBytes, groups uint8, codes, scales []byte) {
		qdt := safetensors.I8
		if int4 {
			qdt = safetensors.U8
		}
		specs := []safetensors.Spec{
			{Name: "w.qweight", DType: qdt, Shape: []int64{int64(rows), int64(rowBytes)}},
			{Name: "w.scales", DType: safetensors.F16, Shape: []int64{int64(rows), int64(groups)}},
		}
		path := filepath.Join(dir, "q.safetensors")
		// EncodeHeader and one write rather than safetensors.Create, whose
		// fsyncs would slow the fuzzer a hundredfold.
		hdr, err := safetensors.EncodeHeader(specs, map[string]string{qformat.FormatKey: qformat.Format, "mixq:w": rec})
		if err != nil {
			return // not a file the container can hold (metadata that is not UTF-8)
		}
		file := append(hdr, fill(codes, int(specs[0].Bytes()))...)
		file = append(file, fill(scales, int(specs[1].Bytes()))...)
		require.NoError(t, os.WriteFile(path, file, 0o644))
		m, err := qformat.Open(path)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			return
		}
		defer m.Close()
		e, ok := m.Lookup("w")
		require.True(t, ok)
		n, ok := elementsOf(e.Record.Shape)
		require.True(t, ok, "an accepted record's shape %v fits in an int64", e.Record.Shape)
		require.Equal(t, n, e.NumElements())
		if !e.Precision().Quantized() {
			return
		}
		packed, sc, err := m.Codes(e)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			var te *quant.TensorError
			require.ErrorAs(t, err, &te)
			require.Equal(t, "w", te.Tensor)
			return
		}
		l := e.Layout
		w := make([]float32, n)
		require.NoError(t, m.Float32(e, w, be))
		ng := l.GroupsPerRow()
		qmax := float64(l.Precision.QMax())
		for i, v := range w {
			r, c := i/l.Cols, i%l.Cols
			s := float64(halfToFloat(sc[r*ng+c/l.GroupSize]))
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "w[%d] = %v", i, v)
			require.LessOrEqual(t, math.Abs(float64(v)), qmax*s, "w[%d]", i)
		}
		again := make([]byte, len(packed))
		require.NoError(t, be.Quantize(again, w, sc, l))
		require.True(t, bytes.Equal(packed, again), "re-quantized codes differ from the stored ones")
	})
}

func elementsOf(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d != 0 && n > math.MaxInt64/d) {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// halfToFloat widens binary16 bits (finite, as accepted scales are).
func halfToFloat(h uint16) float32 {
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	v := math.Ldexp(m, -24) // subnormal
	if e > 0 {
		v = math.Ldexp(1024+m, e-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return float32(v)
}
