package model

import (
	"encoding/json"
	"fmt"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/quant"
)

// CheckCheckpoint applies the checks Load makes of config.json, Validate
// and the sizes against the tensors, to a floating-point checkpoint that is
// quantized or estimated rather than run, so that mixq does not write an
// output that eval then refuses. It checks only what this package
// understands: without a config.json, or when config.json names another
// architecture or a variant Load does not run (another activation, biases,
// an unknown rope_scaling), it returns nil, since mixq quantizes any
// safetensors checkpoint. Errors are marked with quant.ErrInput and name
// the field (and the tensor, for a size the tensors contradict).
func CheckCheckpoint(ck *checkpoint.Checkpoint) error {
	if ck.Config == nil {
		return nil
	}
	var r rawConfig
	if err := json.Unmarshal(ck.Config, &r); err != nil {
		// A field of the wrong JSON type; whether it matters depends on
		// the architecture, which then cannot be told.
		if _, err := r.arch(); err != nil {
			return nil
		}
		return quant.InputError(fmt.Errorf("%s: config.json: %v", ck.Dir, err))
	}
	// config returns a Config only once the architecture and variant are
	// recognised; its error is then Validate's.
	c, err := r.config()
	if c == nil {
		return nil
	}
	if err != nil {
		return quant.InputError(fmt.Errorf("%s: config.json: %w", ck.Dir, err))
	}
	if err := checkShapes(c, &floatSource{ck: ck}); err != nil {
		return fmt.Errorf("%s: %w", ck.Dir, err)
	}
	return nil
}
