package tokenizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The fields of sentencepiece_model.proto that are read:
//
//	ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; }
//	SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
//	TrainerSpec    { int32 unk_id = 40 [default = 0]; int32 bos_id = 41 [default = 1];
//	                 int32 eos_id = 42 [default = 2]; int32 pad_id = 43 [default = -1]; }
//
// Every other field is skipped by its wire type.
const (
	fieldPieces      = 1
	fieldTrainerSpec = 2
	fieldPiece       = 1
	fieldScore       = 2
	fieldType        = 3
	fieldUnkID       = 40
	fieldBosID       = 41
	fieldEosID       = 42
	fieldPadID       = 43
)

const (
	wireVarint = 0
	wire64     = 1
	wireBytes  = 2
	wire32     = 5
)

// protoField is one decoded field: its number, wire type, and either the
// integer (varint, fixed32, fixed64) or the bytes.
type protoField struct {
	num  int
	wire int
	u    uint64
	b    []byte
}

// nextField decodes one field from buf and returns the rest.
func nextField(buf []byte) (protoField, []byte, error) {
	key, n := binary.Uvarint(buf)
	if n <= 0 {
		return protoField{}, nil, errors.New("bad field key")
	}
	buf = buf[n:]
	f := protoField{num: int(key >> 3), wire: int(key & 7)}
	switch f.wire {
	case wireVarint:
		f.u, n = binary.Uvarint(buf)
		if n <= 0 {
			return f, nil, fmt.Errorf("field %d: bad varint", f.num)
		}
		buf = buf[n:]
	case wire64:
		if len(buf) < 8 {
			return f, nil, fmt.Errorf("field %d: truncated", f.num)
		}
		f.u, buf = binary.LittleEndian.Uint64(buf), buf[8:]
	case wire32:
		if len(buf) < 4 {
			return f, nil, fmt.Errorf("field %d: truncated", f.num)
		}
		f.u, buf = uint64(binary.LittleEndian.Uint32(buf)), buf[4:]
	case wireBytes:
		l, n := binary.Uvarint(buf)
		if n <= 0 || l > uint64(len(buf)-n) {
			return f, nil, fmt.Errorf("field %d: bad length", f.num)
		}
		f.b, buf = buf[n:n+int(l)], buf[n+int(l):]
	default:
		return f, nil, fmt.Errorf("field %d: unsupported wire type %d", f.num, f.wire)
	}
	return f, buf, nil
}

func loadSentencePiece(path string) (*Vocab, error) {
	raw, err := readFile(path)
	if err != nil {
		return nil, err
	}
	v, err := parseModelProto(raw)
	if err != nil {
		return nil, inputErr(path, fmt.Errorf("not a SentencePiece model: %w", err))
	}
	v.Source = path
	return v, nil
}

// parseModelProto reads pieces and special ids. Piece types map to GGUF
// token types one to one (both use SentencePiece's numbering).
func parseModelProto(buf []byte) (*Vocab, error) {
	v := &Vocab{Model: "llama", Pre: "default", BOS: 1, EOS: 2, UNK: 0, PAD: -1}
	for len(buf) > 0 {
		f, rest, err := nextField(buf)
		if err != nil {
			return nil, err
		}
		buf = rest
		switch {
		case f.num == fieldPieces && f.wire == wireBytes:
			piece, score, typ, err := parsePiece(f.b)
			if err != nil {
				return nil, fmt.Errorf("piece %d: %w", len(v.Tokens), err)
			}
			v.Tokens = append(v.Tokens, piece)
			v.Scores = append(v.Scores, score)
			v.Types = append(v.Types, typ)
		case f.num == fieldTrainerSpec && f.wire == wireBytes:
			if err := parseTrainer(f.b, v); err != nil {
				return nil, fmt.Errorf("trainer_spec: %w", err)
			}
		}
	}
	if len(v.Tokens) == 0 {
		return nil, errors.New("no pieces")
	}
	return v, nil
}

func parsePiece(buf []byte) (piece string, score float32, typ int32, err error) {
	typ = Normal
	for len(buf) > 0 {
		var f protoField
		if f, buf, err = nextField(buf); err != nil {
			return
		}
		switch {
		case f.num == fieldPiece && f.wire == wireBytes:
			piece = string(f.b)
		case f.num == fieldScore && f.wire == wire32:
			score = math.Float32frombits(uint32(f.u))
		case f.num == fieldType && f.wire == wireVarint:
			if f.u < uint64(Normal) || f.u > uint64(Byte) {
				return "", 0, 0, fmt.Errorf("unknown piece type %d", f.u)
			}
			typ = int32(f.u)
		}
	}
	return
}

func parseTrainer(buf []byte, v *Vocab) error {
	for len(buf) > 0 {
		f, rest, err := nextField(buf)
		if err != nil {
			return err
		}
		buf = rest
		if f.wire != wireVarint {
			continue
		}
		id := int(int32(f.u)) // int32 fields: negative ids are 10-byte varints
		switch f.num {
		case fieldUnkID:
			v.UNK = id
		case fieldBosID:
			v.BOS = id
		case fieldEosID:
			v.EOS = id
		case fieldPadID:
			v.PAD = id
		}
	}
	return nil
}
