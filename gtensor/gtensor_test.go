package gtensor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

func TestDenseSharesMemory(t *testing.T) {
	data := []float32{1, 2, 3, 4, 5, 6}
	d, err := Dense(data, 2, 3)
	require.NoError(t, err)
	assert.Equal(t, tensor.Shape{2, 3}, d.Shape())
	data[4] = 42
	v, err := d.At(1, 1)
	require.NoError(t, err)
	assert.Equal(t, float32(42), v, "the tensor must see writes to the slice")

	back, shape, err := Float32s(d)
	require.NoError(t, err)
	assert.Equal(t, []int{2, 3}, shape)
	assert.Same(t, &data[0], &back[0], "Float32s must not copy")

	_, err = Dense(data, 4, 2)
	assert.Error(t, err)
}

func TestFloat32sRefusesViews(t *testing.T) {
	d, err := Dense([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	require.NoError(t, err)
	require.NoError(t, d.T())
	_, _, err = Float32s(d)
	assert.Error(t, err)
	_, _, err = Float32s(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2})))
	assert.Error(t, err)
}

func TestQuantizeMatchesBackend(t *testing.T) {
	data := make([]float32, 3*40)
	for i := range data {
		data[i] = float32(i%17) - 8.5
	}
	d, err := Dense(data, 3, 40)
	require.NoError(t, err)
	be := cpu.New(1)
	packed, scales, l, err := Quantize(be, d, 16, quant.INT4)
	require.NoError(t, err)
	assert.Equal(t, quant.Layout{Rows: 3, Cols: 40, GroupSize: 16, Precision: quant.INT4}, l)

	want := make([]uint16, l.NumScales())
	require.NoError(t, be.GroupScales(want, data, l))
	assert.Equal(t, want, scales)
	wantP := make([]byte, l.PackedBytes())
	require.NoError(t, be.Quantize(wantP, data, want, l))
	assert.Equal(t, wantP, packed)
}
