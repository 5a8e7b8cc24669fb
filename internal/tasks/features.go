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

	"github.com/predq/predq/internal/prediction"
)

// A prediction:persist payload is the JSON array of its records (prediction.Record's JSON
// form, features as numbers), written by the JSON library. Decoding also accepts features as
// one JSON string, the base64 (standard, padded) of their IEEE 754 float64 bits,
// little-endian: the form an api before this one enqueued, which a queue Redis with
// persistence may still hold (and retry for days) when the worker is upgraded, and which the
// api replicas of a rolling upgrade keep enqueuing until they are replaced.

// persistUnmarshal is the option of every persist payload decode: it applies to every
// []float64 of the value (prediction.Record has one, its features).
var persistUnmarshal = jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(unmarshalFeatures))

// marshalPersistBatch encodes the payload of recs, a JSON array. It fails on a NaN or
// infinite number, which the api never answers with.
func marshalPersistBatch(recs []prediction.Record) ([]byte, error) {
	return jsonv2.Marshal(recs)
}

// unmarshalPersist decodes a persist payload into v (a *[]prediction.Record).
func unmarshalPersist(b []byte, v any) error {
	return jsonv2.Unmarshal(b, v, persistUnmarshal)
}

// unmarshalFeatures decodes features written as a base64 string (see above); an array of
// numbers (or null) takes the default decoding.
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
