package mixq

import "github.com/mixq/mixq/quant"

// Rounder chooses the scales, and through the weights the codes, of
// quantized tensors in place of absmax round-to-nearest (package gptq
// provides the scale search and GPTQ). The output format is unchanged:
// the codes are always the backend's Quantize of the weights it leaves in
// w with the scales it writes.
type Rounder interface {
	// Round is called for each block of whole rows [row0, row0+l.Rows) of
	// tensor name, with w holding their binary32 weights. When it returns
	// handled, it has filled scales (l.NumScales()) and may have replaced w
	// by weights whose quantization with those scales gives the codes it
	// chose; the block is then encoded with the backend's Quantize. When
	// not handled, the block gets absmax scales as without a Rounder.
	// Errors use block-relative positions, as a backend's do.
	Round(name string, row0 int, w []float32, scales []uint16, l quant.Layout) (handled bool, err error)
}

// groups computes the scales and codes of one block, through the Rounder
// when there is one.
func (q *quantizer) groups(name string, row0 int, packed []byte, scales []uint16, l quant.Layout) error {
	if q.rounder != nil {
		handled, err := q.rounder.Round(name, row0, q.f32, scales, l)
		if err != nil {
			return err
		}
		if handled {
			return q.be.Quantize(packed, q.f32, scales, l)
		}
	}
	return quant.QuantizeGroups(q.be, packed, scales, q.f32, l)
}
