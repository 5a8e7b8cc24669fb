package tasks

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// A prediction:persist payload carries each record's features as one JSON string, the
// base64 (standard, padded) of their IEEE 754 float64 bits, little-endian, 8 bytes a
// feature: the other members stay readable JSON (asynqmon shows them). Writing 60 floats as
// decimal text was some 5% of the api's CPU per prediction, and parsing them the largest part
// of the worker's decode (pprof); see BenchmarkPersistPayload. Size: a record of 60
// full-precision features takes 855 bytes against 1,238 as numbers, but one of 60 short
// decimals like the sonar data's (0.0200) 855 against 628. Decoding still accepts a JSON
// array of numbers, the form of payloads enqueued before this encoding (and handy by hand).

// The options of every persist payload encode and decode. They apply to every []float64 of
// the value: prediction.Record has one, its features.
var (
	persistMarshal   = jsonv2.WithMarshalers(jsonv2.MarshalToFunc(marshalFeatures))
	persistUnmarshal = jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(unmarshalFeatures))
)

// marshalPersist encodes a persist payload: a record or a slice of records. It fails on a
// NaN or infinite feature, which the api never answers for, as the decimal form did.
func marshalPersist(v any) ([]byte, error) {
	return jsonv2.Marshal(v, persistMarshal)
}

// unmarshalPersist decodes a persist payload into v (a *prediction.Record or a
// *[]prediction.Record).
func unmarshalPersist(b []byte, v any) error {
	return jsonv2.Unmarshal(b, v, persistUnmarshal)
}

func marshalFeatures(enc *jsontext.Encoder, fs []float64) error {
	raw := make([]byte, 8*len(fs))
	for i, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("feature %d is %v", i, f)
		}
		binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(f))
	}
	out := make([]byte, 0, 2+base64.StdEncoding.EncodedLen(len(raw)))
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, raw)
	out = append(out, '"')
	return enc.WriteValue(out)
}

func unmarshalFeatures(dec *jsontext.Decoder, fs *[]float64) error {
	if dec.PeekKind() != '"' {
		return errors.ErrUnsupported // an array of numbers (or null): the default decoding
	}
	v, err := dec.ReadValue()
	if err != nil {
		return err
	}
	s := v[1 : len(v)-1] // base64 needs no escapes; a writer may have escaped "/" anyway
	if bytes.IndexByte(s, '\\') >= 0 {
		if s, err = jsontext.AppendUnquote(nil, v); err != nil {
			return err
		}
	}
	raw, err := base64.StdEncoding.AppendDecode(nil, s)
	if err != nil {
		return fmt.Errorf("features: %w", err)
	}
	if len(raw)%8 != 0 {
		return fmt.Errorf("features: %d bytes is not a whole number of float64s", len(raw))
	}
	out := make([]float64, len(raw)/8)
	for i := range out {
		f := math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("features: feature %d is %v", i, f)
		}
		out[i] = f
	}
	*fs = out
	return nil
}
