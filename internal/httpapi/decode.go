package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/strictjson"
	"github.com/predq/predq/internal/validate"
)

// decodeOptions are the options of every request body decode (see internal/strictjson).
var decodeOptions = strictjson.Options

var (
	errNullNumber     = strictjson.ErrNullNumber
	errNumberOverflow = strictjson.ErrNumberOverflow
)

// checkJSONContentType refuses a body that is not declared as JSON (415). A charset
// parameter is allowed when it is UTF-8.
func checkJSONContentType(h http.Header) error {
	ct := h.Get(echo.HeaderContentType)
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		cs, ok := params["charset"]
		if !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return &problemError{status: http.StatusUnsupportedMediaType, slug: slugMediaType,
		title: "Unsupported media type", detail: "The request body must be JSON: Content-Type: application/json."}
}

// decodeJSONBody checks the content type, reads the body (already bounded by bodyLimit) and
// decodes it strictly into v. Its errors are problems: 415, 413, 400 for JSON that does not
// parse or members that must not be there, 422 for well-formed JSON of the wrong shape.
func decodeJSONBody(c echo.Context, v any) error {
	req := c.Request()
	if err := checkJSONContentType(req.Header); err != nil {
		return err
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return err
		}
		return badRequest("The request body could not be read.", nil, err)
	}
	return decodeJSON(body, v)
}

// decodeJSON strictly decodes body into v and turns decoding errors into problems.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("The request body is empty; a JSON object is required.", nil, nil)
	}
	err := json.Unmarshal(body, v, decodeOptions)
	if err == nil {
		return nil
	}
	return decodeProblem(err)
}

// decodeProblem classifies a decoding error.
func decodeProblem(err error) error {
	if se, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		field := fieldFromPointer(se.JSONPointer)
		reason := "invalid JSON"
		if se.Err != nil {
			reason = se.Err.Error()
		}
		detail := fmt.Sprintf("The request body is not valid JSON: %s at byte offset %d.", reason, se.ByteOffset)
		var fields []validate.FieldError
		if field != "" {
			fields = []validate.FieldError{{Field: field, Message: reason}}
		}
		return badRequest(detail, fields, err)
	}
	se, ok := errors.AsType[*json.SemanticError](err)
	if !ok {
		// Neither syntax nor semantics (e.g. an I/O error): still the client's body.
		return badRequest("The request body could not be decoded.", nil, err)
	}
	field := fieldFromPointer(se.JSONPointer)
	switch {
	case errors.Is(se.Err, json.ErrUnknownName):
		return badRequest("The request body has a member that is not part of the API (names are case-sensitive).",
			[]validate.FieldError{{Field: field, Message: "is not a known member"}}, err)
	case errors.Is(se.Err, errNumberOverflow):
		return badRequest("The request body has a number that overflows a 64-bit float.",
			[]validate.FieldError{{Field: field, Message: errNumberOverflow.Error()}}, err)
	case errors.Is(se.Err, errNullNumber):
		return unprocessable([]validate.FieldError{{Field: field, Message: errNullNumber.Error()}}, err)
	case field == "":
		return &problemError{status: http.StatusUnprocessableEntity, slug: slugValidation, title: "Invalid input",
			detail: "The request body must be a JSON object.", cause: err}
	default:
		return unprocessable([]validate.FieldError{{Field: field, Message: wrongTypeMessage(se)}}, err)
	}
}

func badRequest(detail string, fields []validate.FieldError, cause error) *problemError {
	return &problemError{status: http.StatusBadRequest, slug: slugMalformed, title: "Malformed request",
		detail: detail, fields: fields, cause: cause}
}

func unprocessable(fields []validate.FieldError, cause error) *problemError {
	return &problemError{status: http.StatusUnprocessableEntity, slug: slugValidation, title: "Invalid input",
		detail: "The request is well-formed but breaks the input rules; see errors.", fields: fields, cause: cause}
}

// wrongTypeMessage says what a field should have been, in JSON terms.
func wrongTypeMessage(se *json.SemanticError) string {
	want := "a valid value"
	if t := se.GoType; t != nil {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32,
			reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want = "a number"
		case reflect.String:
			want = "a string"
		case reflect.Bool:
			want = "a boolean"
		case reflect.Slice, reflect.Array:
			want = "an array"
		case reflect.Struct, reflect.Map:
			want = "an object"
		}
	}
	if got := jsonKindName(se.JSONKind); got != "" {
		return fmt.Sprintf("must be %s, got %s", want, got)
	}
	return "must be " + want
}

func jsonKindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return ""
}

// maxFieldNameLen bounds a field name taken from the client's JSON (an unknown member).
const maxFieldNameLen = 64

// fieldFromPointer turns a JSON pointer ("/samples/2/features/0") into the field path the
// client wrote ("samples[2].features[0]").
func fieldFromPointer(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if isIndex(tok) && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		if len(tok) > maxFieldNameLen {
			tok = truncateRunes(tok, maxFieldNameLen) + "…"
		}
		b.WriteString(tok)
	}
	return b.String()
}

func isIndex(tok string) bool {
	if tok == "" || len(tok) > 9 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
