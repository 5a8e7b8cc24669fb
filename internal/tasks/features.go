package tasks

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/predq/predq/internal/prediction"
)

// A prediction:persist payload carries each record's features as one JSON string, the
// base64 (standard, padded) of their IEEE 754 float64 bits, little-endian, 8 bytes a
// feature: the other members stay readable JSON (asynqmon shows them). Writing 60 floats as
// decimal text was some 5% of the api's CPU per prediction, and parsing them the largest part
// of the worker's decode (pprof); see BenchmarkPersistPayload. Size: a record of 60
// full-precision features takes 855 bytes against 1,238 as numbers, but one of 60 short
// decimals like the sonar data's (0.0200) 855 against 628. Decoding still accepts a JSON
// array of numbers, the form of payloads enqueued before this encoding (and handy by hand).

// persistUnmarshal is the option of every persist payload decode: it applies to every
// []float64 of the value (prediction.Record has one, its features).
var persistUnmarshal = jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(unmarshalFeatures))

// marshalPersistBatch encodes the payload of recs, a JSON array. It fails on a NaN or
// infinite number, which the api never answers with, as the decimal form did.
func marshalPersistBatch(recs []prediction.Record) ([]byte, error) {
	size := 2
	for i := range recs {
		size += persistRecordSize(&recs[i]) + 1
	}
	b := append(make([]byte, 0, size), '[')
	for i := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendPersistRecord(b, &recs[i]); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// persistRecordSize is about the size of r's payload: its members' names, strings and
// numbers, and its features in base64.
func persistRecordSize(r *prediction.Record) int {
	return 320 + len(r.RequestID) + len(r.UserID) + len(r.PredictionClass) + len(r.ModelVersion) +
		len(r.Preprocessing) + base64.StdEncoding.EncodedLen(8*len(r.Features))
}

// appendPersistRecord appends r as jsonv2 would write it with its features in binary: the
// members of prediction.Record in field order (user_id left out when empty), strings quoted
// by jsontext, floats in jsonv2's format, created_at in RFC 3339 with nanoseconds, features
// by appendFeatures. Writing the records by reflection was about 4% of the api's CPU per
// prediction (pprof); TestAppendPersistRecordIsJSONv2 compares the bytes with jsonv2's.
func appendPersistRecord(b []byte, r *prediction.Record) ([]byte, error) {
	for _, f := range [...]float64{r.Prediction, r.Confidence, r.ConfidenceThreshold, r.LatencyMS} {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("unsupported value: %v", f)
		}
	}
	if y := r.CreatedAt.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("created_at: year %d outside [0,9999]", y)
	}
	var err error
	b = append(b, `{"request_id":`...)
	if b, err = jsontext.AppendQuote(b, r.RequestID); err != nil {
		return nil, err
	}
	if r.UserID != "" {
		b = append(b, `,"user_id":`...)
		if b, err = jsontext.AppendQuote(b, r.UserID); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"features":`...)
	if b, err = appendFeatures(b, r.Features); err != nil {
		return nil, err
	}
	b = append(b, `,"prediction":`...)
	b = jsontext.AppendFloat(b, r.Prediction, 64)
	b = append(b, `,"confidence":`...)
	b = jsontext.AppendFloat(b, r.Confidence, 64)
	b = append(b, `,"prediction_class":`...)
	if b, err = jsontext.AppendQuote(b, r.PredictionClass); err != nil {
		return nil, err
	}
	b = append(b, `,"model_version":`...)
	if b, err = jsontext.AppendQuote(b, r.ModelVersion); err != nil {
		return nil, err
	}
	b = append(b, `,"preprocessing":`...)
	if b, err = jsontext.AppendQuote(b, r.Preprocessing); err != nil {
		return nil, err
	}
	b = append(b, `,"confidence_threshold":`...)
	b = jsontext.AppendFloat(b, r.ConfidenceThreshold, 64)
	b = append(b, `,"cached":`...)
	b = strconv.AppendBool(b, r.Cached)
	b = append(b, `,"latency_ms":`...)
	b = jsontext.AppendFloat(b, r.LatencyMS, 64)
	b = append(b, `,"created_at":"`...)
	b = r.CreatedAt.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"', '}'), nil
}

// unmarshalPersist decodes a persist payload into v (a *prediction.Record or a
// *[]prediction.Record).
func unmarshalPersist(b []byte, v any) error {
	return jsonv2.Unmarshal(b, v, persistUnmarshal)
}

// appendFeatures appends fs as a JSON string: the base64 of their little-endian bits.
func appendFeatures(b []byte, fs []float64) ([]byte, error) {
	var raw [8 * prediction.MaxFeatures]byte
	buf := raw[:0]
	if len(fs) > prediction.MaxFeatures {
		buf = make([]byte, 0, 8*len(fs))
	}
	for i, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("feature %d is %v", i, f)
		}
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(f))
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, buf)
	return append(b, '"'), nil
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
