// Package strictjson holds the decoding options of every request body, for the HTTP layer and
// for streamed job uploads alike.
//
// Why a strict decoder: encoding/json (v1) accepts duplicate members, matches names without
// regard to case and ignores what follows the value. The v2 API (go-json-experiment/json)
// refuses duplicate names, invalid UTF-8 and trailing data by default, matches names exactly,
// and is told here to refuse unknown members. Two things it would still let through are
// handled by Options: a JSON null where a number is required (v2 leaves the zero value) and a
// number that overflows float64.
package strictjson

import (
	"errors"
	"strconv"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Errors reported (inside a *json.SemanticError) for a float64 target.
var (
	ErrNullNumber     = errors.New("must be a number, not null")
	ErrNumberOverflow = errors.New("number overflows a 64-bit float")
)

// Options are the options of every request body decode.
var Options = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.WithUnmarshalers(json.UnmarshalFromFunc(unmarshalFloat64)),
)

// unmarshalFloat64 refuses null and out-of-range numbers for a float64. (A *float64 field's
// null is handled before this is called, and means "absent".) Other kinds fall through to
// the default, which reports the wrong type.
func unmarshalFloat64(dec *jsontext.Decoder, v *float64) error {
	switch dec.PeekKind() {
	case 'n':
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		return ErrNullNumber
	case '0':
		val, err := dec.ReadValue()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(val), 64)
		if err != nil {
			// The decoder has checked the grammar, so only a range error is left.
			return ErrNumberOverflow
		}
		*v = f
		return nil
	default:
		return errors.ErrUnsupported
	}
}
