package job

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/predq/predq/internal/strictjson"
)

// RowSource yields the feature vectors of a submission one at a time, so that a submission of
// millions of rows is stored with bounded memory. Next returns io.EOF after the last row. A
// row that cannot be read is a *RowError; any other error ends the submission. The slice
// Next returns may be reused by the following call.
type RowSource interface {
	Next() ([]float64, error)
}

// RowError is a problem with one row of a submission. Row is 1-based (the line of an NDJSON
// body, the record of a CSV body after any header, or samples[Row-1] of a JSON body); Field
// is the JSON path within the row.
type RowError struct {
	Row     int
	Field   string
	Message string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("row %d: %s: %s", e.Row, e.Field, e.Message)
}

// maxLine bounds one NDJSON line or CSV record (100 features of at most ~25 bytes each, with
// room to spare); a longer one is a row error, never an unbounded allocation.
const maxLine = 64 << 10

// NDJSONSource reads one sample per line: {"features":[…]} or a bare array [...]. Blank
// lines are skipped.
type NDJSONSource struct {
	r    *bufio.Reader
	line int
	buf  []byte
	row  []float64 // reused by the fast path
}

// NewNDJSONSource reads from r.
func NewNDJSONSource(r io.Reader) *NDJSONSource {
	return &NDJSONSource{r: bufio.NewReaderSize(r, 256<<10)}
}

type ndjsonRow struct {
	Features []float64 `json:"features"`
}

// Next implements RowSource.
func (s *NDJSONSource) Next() ([]float64, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, err
		}
		s.line++
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > maxLine {
			return nil, &RowError{Row: s.line, Field: "features", Message: fmt.Sprintf("line longer than %d bytes", maxLine)}
		}
		var x []float64
		if line[0] == '[' {
			if x, ok := parseNumberArray(s.row[:0], line); ok {
				s.row = x
				return x, nil
			}
			err = json.Unmarshal(line, &x, strictjson.Options)
		} else {
			var row ndjsonRow
			err = json.Unmarshal(line, &row, strictjson.Options)
			x = row.Features
			if err == nil && x == nil {
				return nil, &RowError{Row: s.line, Field: "features", Message: "is required"}
			}
		}
		if err != nil {
			return nil, &RowError{Row: s.line, Field: fieldOf(err, "features"), Message: jsonMessage(err)}
		}
		return x, nil
	}
}

// parseNumberArray is the fast path of a bare-array NDJSON line: it parses line when it is
// exactly a non-empty JSON array of numbers, '[' number (',' number)* ']' with optional JSON
// whitespace around every token, and every number is within float64's range. It then
// returns what the strict decoder returns for that line (each number parsed by
// strconv.ParseFloat, as strictjson does), at a fraction of its cost; anything else
// (another value, a JSON error, an overflowing number, an empty array) reports false, and
// the caller decodes the line with the strict decoder for its exact answer or error.
//
// The numbers are appended to x[:0].
func parseNumberArray(x []float64, line []byte) ([]float64, bool) {
	i := skipSpace(line, 1) // line[0] == '['
	x = x[:0]
	for {
		n := numberLen(line[i:])
		if n == 0 {
			return nil, false
		}
		f, ok := parseNumber(line[i : i+n])
		if !ok {
			return nil, false
		}
		x = append(x, f)
		i = skipSpace(line, i+n)
		if i == len(line) {
			return nil, false
		}
		switch line[i] {
		case ',':
			i = skipSpace(line, i+1)
		case ']':
			if skipSpace(line, i+1) != len(line) {
				return nil, false
			}
			return x, true
		default:
			return nil, false
		}
	}
}

// pow10 holds the powers of ten that a float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
	1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseNumber returns the float64 of b, a JSON number (numberLen(b) == len(b)), exactly as
// strconv.ParseFloat(string(b), 64) does; false when ParseFloat refuses it (out of range).
//
// Most numbers take the exact path that strconv itself tries first (Clinger's fast path):
// when the decimal digits, without the point, make an integer m < 2^53 and the number is
// m·10^e with |e| <= 22, both m and 10^|e| are float64s, and one IEEE multiplication or
// division rounds m·10^e correctly, to nearest-even, which is ParseFloat's result by
// definition. It skips ParseFloat's general parser (underscores, hex, infinities, long
// mantissas) and the string conversion. Every other number goes to ParseFloat.
func parseNumber(b []byte) (float64, bool) {
	i, neg := 0, false
	if b[0] == '-' {
		i, neg = 1, true
	}
	var m uint64
	digits, exp := 0, 0 // significant digits in m; the decimal exponent of m
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if m == 0 && b[i] == '0' {
			continue
		}
		if digits == 19 {
			return parseNumberSlow(b)
		}
		m = m*10 + uint64(b[i]-'0')
		digits++
	}
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if m == 0 && b[i] == '0' {
				exp--
				continue
			}
			if digits == 19 {
				return parseNumberSlow(b)
			}
			m = m*10 + uint64(b[i]-'0')
			digits++
			exp--
		}
	}
	if i < len(b) { // an exponent: e, E, an optional sign and digits (numberLen checked them)
		i++
		eneg := false
		if b[i] == '+' || b[i] == '-' {
			eneg = b[i] == '-'
			i++
		}
		e := 0
		for ; i < len(b); i++ {
			if e > 1000 {
				return parseNumberSlow(b)
			}
			e = e*10 + int(b[i]-'0')
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if m>>53 != 0 {
		return parseNumberSlow(b)
	}
	f := float64(m)
	if neg {
		f = -f
	}
	switch {
	case m == 0 || exp == 0:
		return f, true
	case exp > 0 && exp <= 22:
		return f * pow10[exp], true
	case exp < 0 && exp >= -22:
		return f / pow10[-exp], true
	}
	return parseNumberSlow(b)
}

func parseNumberSlow(b []byte) (float64, bool) {
	f, err := strconv.ParseFloat(string(b), 64)
	return f, err == nil
}

// skipSpace returns the index of the first byte at or after i that is not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// numberLen returns the length of the JSON number at the start of b (RFC 8259:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), 0 when b does not start with one.
func numberLen(b []byte) int {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	default:
		return 0
	}
	if i < len(b) && b[i] == '.' {
		j := i + 1
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		}
		if j == i+1 {
			return 0
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		j := i + 1
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := j
		for ; k < len(b) && b[k] >= '0' && b[k] <= '9'; k++ {
		}
		if k == j {
			return 0
		}
		i = k
	}
	return i
}

// readLine returns the next line without its newline, io.EOF at the end. Lines longer than
// maxLine are returned truncated (just over the limit) so that the caller reports them.
func (s *NDJSONSource) readLine() ([]byte, error) {
	s.buf = s.buf[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(s.buf) <= maxLine {
			s.buf = append(s.buf, chunk...)
		}
		switch {
		case err == nil:
			return s.buf[:len(s.buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(s.buf) == 0 {
				return nil, io.EOF
			}
			return s.buf, nil
		default:
			return nil, err
		}
	}
}

// CSVSource reads one sample per record: numbers only, with an optional header line (a first
// record that is not all numbers).
type CSVSource struct {
	r      *csv.Reader
	row    int
	first  bool
	header bool
}

// NewCSVSource reads from r.
func NewCSVSource(r io.Reader) *CSVSource {
	cr := csv.NewReader(bufio.NewReaderSize(r, 256<<10))
	cr.FieldsPerRecord = -1 // rows are checked against the model's input size instead
	cr.ReuseRecord = true
	cr.TrimLeadingSpace = true
	return &CSVSource{r: cr, first: true}
}

// Next implements RowSource.
func (s *CSVSource) Next() ([]float64, error) {
	for {
		rec, err := s.r.Read()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, &RowError{Row: s.row + 1, Field: "features", Message: pe.Err.Error()}
			}
			return nil, err
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		x := make([]float64, len(rec))
		bad := -1
		for i, f := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil {
				bad = i
				break
			}
			x[i] = v
		}
		if s.first {
			s.first = false
			if bad >= 0 {
				s.header = true // a header line: skipped, not counted
				continue
			}
		}
		s.row++
		if bad >= 0 {
			return nil, &RowError{Row: s.row, Field: fmt.Sprintf("features[%d]", bad), Message: fmt.Sprintf("%q is not a number", truncate(rec[bad], 32))}
		}
		return x, nil
	}
}

// JSONSource streams the "samples" array of a JSON job body without holding it in memory;
// the other members are decoded into Options as they come. Options are complete only after
// the source returned io.EOF (members may follow "samples").
type JSONSource struct {
	dec     *jsontext.Decoder
	opts    *JSONOptions
	row     int
	inArray bool
	done    bool
}

// JSONOptions are the members of a JSON job body besides samples. Pointers tell absent from
// zero.
type JSONOptions struct {
	ModelVersion        *string           `json:"model_version"`
	Preprocessing       *string           `json:"preprocessing"`
	ConfidenceThreshold *float64          `json:"confidence_threshold"`
	WebhookURL          *string           `json:"webhook_url"`
	Metadata            map[string]string `json:"metadata"`
	Priority            *string           `json:"priority"`
	SawSamples          bool              `json:"-"`
}

// NewJSONSource reads a JSON object from r into opts as it streams its samples.
func NewJSONSource(r io.Reader, opts *JSONOptions) *JSONSource {
	return &JSONSource{dec: jsontext.NewDecoder(bufio.NewReaderSize(r, 256<<10)), opts: opts}
}

// DecodeError is a body that is not well-formed JSON (400, unlike a RowError's 422).
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "invalid JSON: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

type sampleRow struct {
	Features []float64 `json:"features"`
}

// Next implements RowSource.
func (s *JSONSource) Next() ([]float64, error) {
	if s.done {
		return nil, io.EOF
	}
	if !s.inArray {
		if err := s.advanceToSamples(); err != nil {
			return nil, err
		}
		if s.done {
			return nil, io.EOF
		}
	}
	if s.dec.PeekKind() == ']' {
		if _, err := s.dec.ReadToken(); err != nil {
			return nil, &DecodeError{err}
		}
		s.inArray = false
		if err := s.advanceToSamples(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	s.row++
	var row sampleRow
	if err := json.UnmarshalDecode(s.dec, &row, strictjson.Options); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) {
			return nil, &RowError{Row: s.row, Field: fieldOf(err, "features"), Message: jsonMessage(err)}
		}
		return nil, &DecodeError{err}
	}
	if row.Features == nil {
		return nil, &RowError{Row: s.row, Field: "features", Message: "is required"}
	}
	return row.Features, nil
}

// advanceToSamples reads object members until the start of the samples array (inArray) or
// the end of the object (done).
func (s *JSONSource) advanceToSamples() error {
	if s.dec.StackDepth() == 0 {
		tok, err := s.dec.ReadToken()
		if err != nil {
			return &DecodeError{err}
		}
		if tok.Kind() != '{' {
			return &DecodeError{errors.New("the body must be a JSON object")}
		}
	}
	for {
		if s.dec.PeekKind() == '}' {
			if _, err := s.dec.ReadToken(); err != nil {
				return &DecodeError{err}
			}
			// Nothing may follow the object.
			if _, err := s.dec.ReadToken(); !errors.Is(err, io.EOF) {
				return &DecodeError{errors.New("unexpected data after the JSON object")}
			}
			s.done = true
			return nil
		}
		tok, err := s.dec.ReadToken()
		if err != nil {
			return &DecodeError{err}
		}
		name := tok.String()
		var target any
		switch name {
		case "samples":
			if s.opts.SawSamples {
				return &DecodeError{errors.New(`duplicate member "samples"`)}
			}
			s.opts.SawSamples = true
			if s.dec.PeekKind() != '[' {
				return &RowError{Row: 0, Field: "samples", Message: "must be an array"}
			}
			if _, err := s.dec.ReadToken(); err != nil {
				return &DecodeError{err}
			}
			s.inArray = true
			return nil
		case "model_version":
			target = &s.opts.ModelVersion
		case "preprocessing":
			target = &s.opts.Preprocessing
		case "confidence_threshold":
			target = &s.opts.ConfidenceThreshold
		case "webhook_url":
			target = &s.opts.WebhookURL
		case "metadata":
			target = &s.opts.Metadata
		case "priority":
			target = &s.opts.Priority
		default:
			return &RowError{Row: 0, Field: name, Message: "is not a known member"}
		}
		if err := json.UnmarshalDecode(s.dec, target, strictjson.Options); err != nil {
			var se *json.SemanticError
			if errors.As(err, &se) {
				return &RowError{Row: 0, Field: name, Message: jsonMessage(err)}
			}
			return &DecodeError{err}
		}
	}
}

// fieldOf names the member a json error points at, e.g. "features[3]".
func fieldOf(err error, def string) string {
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		parts := strings.Split(strings.TrimPrefix(string(se.JSONPointer), "/"), "/")
		var b strings.Builder
		for i, p := range parts {
			if _, err := strconv.Atoi(p); err == nil && i > 0 {
				b.WriteString("[" + p + "]")
				continue
			}
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		}
		if parts[0] != "" {
			if _, err := strconv.Atoi(parts[0]); err == nil {
				return def + b.String()[len(parts[0]):] // a bare array row: /3 → features[3]
			}
			return b.String()
		}
	}
	return def
}

func jsonMessage(err error) string {
	var se *json.SemanticError
	if errors.As(err, &se) {
		if se.JSONKind != 0 && se.GoType != nil {
			return fmt.Sprintf("must be a %s, got %s", kindName(se.GoType.Kind().String()), se.JSONKind.String())
		}
		if se.Err != nil {
			return se.Err.Error()
		}
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		return "invalid JSON: " + syn.Err.Error()
	}
	return "invalid JSON"
}

func kindName(k string) string {
	switch k {
	case "float64":
		return "number"
	case "slice":
		return "array of numbers"
	}
	return k
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
