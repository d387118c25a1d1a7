package qformat_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// writeData writes a safetensors file whose tensors hold the given bytes.
func writeData(t *testing.T, path string, specs []safetensors.Spec, data [][]byte, md map[string]string) {
	t.Helper()
	w, err := safetensors.Create(path, specs, md)
	require.NoError(t, err)
	for i, s := range specs {
		require.NoError(t, w.Write(s.Name, data[i]))
	}
	require.NoError(t, w.Close())
}

func halves(v ...uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// quantizedPair is an INT8 tensor "a" [2, 5] in groups of 4 (2 groups a
// row) and an INT4 tensor "b" [2, 5] in groups of 2 (3 groups, 3 bytes a
// row, the last high nibble padding), with valid codes and scales; row 1
// group 1 of "a" is all zero with scale +0, as mixq writes such a group.
type quantizedPair struct {
	aCodes, bCodes   []byte
	aScales, bScales []uint16
}

func validPair() quantizedPair {
	return quantizedPair{
		aCodes:  []byte{1, 0x81, 127, 0, 5 /* row 1 */, 3, 0xff, 9, 2, 0},
		aScales: []uint16{0x3c00, 0x3800, 0x2e66, 0},
		// Nibbles -7..7 only: 0x9 is -7, 0x7 is 7; padding nibble 0.
		bCodes:  []byte{0x79, 0x10, 0x07, 0x00, 0x00, 0x03},
		bScales: []uint16{0x3c00, 0x0001, 0x3c00, 0, 0, 0x3c00},
	}
}

func (p quantizedPair) write(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "q.safetensors")
	specs := []safetensors.Spec{
		{Name: "a.qweight", DType: safetensors.I8, Shape: []int64{2, 5}},
		{Name: "a.scales", DType: safetensors.F16, Shape: []int64{2, 2}},
		{Name: "b.qweight", DType: safetensors.U8, Shape: []int64{2, 3}},
		{Name: "b.scales", DType: safetensors.F16, Shape: []int64{2, 3}},
	}
	writeData(t, path, specs, [][]byte{p.aCodes, halves(p.aScales...), p.bCodes, halves(p.bScales...)}, map[string]string{
		qformat.FormatKey: qformat.Format,
		"mixq:a":          `{"precision":"int8","group_size":4,"dtype":"F32","shape":[2,5]}`,
		"mixq:b":          `{"precision":"int4","group_size":2,"dtype":"F32","shape":[2,5]}`,
	})
	return path
}

// decodeAll decodes every entry as eval and dequantize do (through Codes).
func decodeAll(m *qformat.Model) error {
	for _, e := range m.Entries {
		if err := m.Float32(e, make([]float32, e.NumElements()), cpu.New(1)); err != nil {
			return err
		}
	}
	return nil
}

func TestCodesAcceptWhatMixqWrites(t *testing.T) {
	m, err := qformat.Open(validPair().write(t))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, decodeAll(m))
}

// Issue 9, defect 6: scales that are NaN, ±Inf, negative or zero over
// non-zero codes decoded silently into NaN or wrong weights (eval then
// reported perplexity NaN with exit 0), and codes outside the written
// range were accepted. Each is now an input error naming the tensor and
// the place, before anything is decoded.
func TestCodesRefuseBadScalesAndCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(*quantizedPair)
		tensor string
		msg    string
	}{
		{"NaN scale", func(p *quantizedPair) { p.aScales[1] = 0x7e00 }, "a", "row 0, group 1 is NaN"},
		{"+Inf scale", func(p *quantizedPair) { p.bScales[4] = 0x7c00 }, "b", "row 1, group 1 is +Inf"},
		{"-Inf scale", func(p *quantizedPair) { p.aScales[2] = 0xfc00 }, "a", "row 1, group 0 is -Inf"},
		{"negative scale", func(p *quantizedPair) { p.bScales[0] = 0xbc00 }, "b", "row 0, group 0 is negative"},
		{"negative zero scale", func(p *quantizedPair) { p.aScales[3] = 0x8000 }, "a", "row 1, group 1 is negative"},
		{"zero scale over codes", func(p *quantizedPair) { p.aScales[0] = 0 }, "a", "row 0, group 0 is zero but column 0"},
		{"zero scale over int4 codes", func(p *quantizedPair) { p.bScales[2] = 0 }, "b", "row 0, group 2 is zero but column 4"},
		{"int8 -128", func(p *quantizedPair) { p.aCodes[7] = 0x80 }, "a", "row 1, column 2 is -128"},
		{"int4 low nibble -8", func(p *quantizedPair) { p.bCodes[4] = 0x08 }, "b", "row 1, column 2 is -8"},
		{"int4 high nibble -8", func(p *quantizedPair) { p.bCodes[0] = 0x89 }, "b", "row 0, column 1 is -8"},
		{"int4 padding", func(p *quantizedPair) { p.bCodes[5] = 0x13 }, "b", "row 1: the padding nibble"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validPair()
			p.aCodes, p.bCodes = append([]byte(nil), p.aCodes...), append([]byte(nil), p.bCodes...)
			p.aScales, p.bScales = append([]uint16(nil), p.aScales...), append([]uint16(nil), p.bScales...)
			tc.tamper(&p)
			m, err := qformat.Open(p.write(t))
			require.NoError(t, err, "headers are fine; the data is checked when it is read")
			defer m.Close()
			e, ok := m.Lookup(tc.tensor)
			require.True(t, ok)
			_, _, err = m.Codes(e)
			require.ErrorIs(t, err, quant.ErrInput)
			var te *quant.TensorError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tc.tensor, te.Tensor)
			assert.ErrorContains(t, err, tc.msg)
			require.ErrorIs(t, decodeAll(m), quant.ErrInput, "Float32 goes through the same check")
		})
	}
}

// Longer INT4 rows exercise the eight-bytes-at-a-time scan: a -8 in any
// nibble of any byte is found, and clean rows pass.
func TestInt4ScanFindsEveryNibble(t *testing.T) {
	const cols = 40 // 20 bytes a row: two words and a tail of 4
	l := quant.Layout{Rows: 1, Cols: cols, GroupSize: 8, Precision: quant.INT4}
	scales := make([]uint16, l.GroupsPerRow())
	for i := range scales {
		scales[i] = 0x3c00
	}
	for c := range cols {
		packed := make([]byte, cols/2)
		for i := range packed {
			packed[i] = 0x79 // 7 and -7 next to the bad value
		}
		if c%2 == 0 {
			packed[c/2] = packed[c/2]&0xf0 | 0x08
		} else {
			packed[c/2] = packed[c/2]&0x0f | 0x80
		}
		path := filepath.Join(t.TempDir(), "q.safetensors")
		writeData(t, path, []safetensors.Spec{
			{Name: "w.qweight", DType: safetensors.U8, Shape: []int64{1, cols / 2}},
			{Name: "w.scales", DType: safetensors.F16, Shape: []int64{1, int64(len(scales))}},
		}, [][]byte{packed, halves(scales...)}, map[string]string{
			qformat.FormatKey: qformat.Format,
			"mixq:w":          `{"precision":"int4","group_size":8,"dtype":"F32","shape":[1,40]}`,
		})
		m, err := qformat.Open(path)
		require.NoError(t, err)
		e, _ := m.Lookup("w")
		_, _, err = m.Codes(e)
		assert.ErrorContains(t, err, "column "+itoa(c)+" is -8", "column %d", c)
		require.NoError(t, m.Close())
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// A record shape whose element count wraps around int64 used to be
// accepted as a bogus shape when the wrapped count matched the stored
// codes ([3, 6148914691236517206, 2] wraps to 4 elements, 2 rows of 2);
// it is now refused on open, naming the tensor.
func TestRecordShapeOverflow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.safetensors")
	writeData(t, path, []safetensors.Spec{
		{Name: "w.qweight", DType: safetensors.I8, Shape: []int64{2, 2}},
		{Name: "w.scales", DType: safetensors.F16, Shape: []int64{2, 1}},
	}, [][]byte{{1, 2, 3, 4}, halves(0x3c00, 0x3c00)}, map[string]string{
		qformat.FormatKey: qformat.Format,
		"mixq:w":          `{"precision":"int8","group_size":4,"dtype":"F32","shape":[3,6148914691236517206,2]}`,
	})
	_, err := qformat.Open(path)
	require.ErrorIs(t, err, quant.ErrInput)
	var te *quant.TensorError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "w", te.Tensor)
	assert.ErrorContains(t, err, "more elements than an int64 holds")

	path = filepath.Join(t.TempDir(), "neg.safetensors")
	writeData(t, path, []safetensors.Spec{
		{Name: "w.qweight", DType: safetensors.I8, Shape: []int64{2, 2}},
		{Name: "w.scales", DType: safetensors.F16, Shape: []int64{2, 1}},
	}, [][]byte{{1, 2, 3, 4}, halves(0x3c00, 0x3c00)}, map[string]string{
		qformat.FormatKey: qformat.Format,
		"mixq:w":          `{"precision":"int8","group_size":4,"dtype":"F32","shape":[-2,-2]}`,
	})
	_, err = qformat.Open(path)
	require.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "negative dimension")
}

// Issue 9, defect 9: a mixq output opened where an original checkpoint is
// wanted (quantize, estimate, analyze) says it is already quantized by
// mixq instead of blaming dtype I8. This also keeps checkpoint's copy of
// FormatKey in step with this package's.
func TestOriginalReaderSaysAlreadyQuantized(t *testing.T) {
	path := validPair().write(t)
	_, err := checkpoint.Open(path, checkpoint.Options{})
	require.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "already quantized by mixq ("+qformat.Format)
	assert.NotContains(t, err.Error(), "is not supported")
}

// A reader that takes codes (qformat, inspect, model.Load) still names a
// bad dtype in a mixq shard as such: "already quantized" is only for
// readers of original checkpoints.
func TestMixqReaderNamesBadDType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.safetensors")
	writeData(t, path, []safetensors.Spec{{Name: "ids", DType: safetensors.I32, Shape: []int64{2}}}, [][]byte{make([]byte, 8)},
		map[string]string{qformat.FormatKey: qformat.Format, "mixq:ids": `{"precision":"keep","dtype":"I32","shape":[2]}`})
	_, err := qformat.Open(path)
	require.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "dtype I32 is not supported")
	assert.NotContains(t, err.Error(), "already quantized")
}
