package label

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

// RowSource yields the rows of a job's labels one at a time, so that a file of millions of
// labels is stored with bounded memory. Next returns io.EOF after the last row; a row that
// cannot be read is a *RowError; any other error ends the upload.
type RowSource interface {
	Next() (JobRow, error)
}

// maxLine bounds one NDJSON line or CSV record of a labels body.
const maxLine = 4 << 10

// Slice is a RowSource over rows held in memory (for callers that have them already, such as
// the review feature).
type Slice struct {
	Rows []JobRow
	i    int
}

// Next implements RowSource.
func (s *Slice) Next() (JobRow, error) {
	if s.i >= len(s.Rows) {
		return JobRow{}, io.EOF
	}
	s.i++
	return s.Rows[s.i-1], nil
}

// NDJSONSource reads one label per line: {"item_index": 3, "label": "positive"} (label also
// "negative", 1 or 0). Blank lines are skipped.
type NDJSONSource struct {
	r    *bufio.Reader
	line int
	buf  []byte
}

// NewNDJSONSource reads from r.
func NewNDJSONSource(r io.Reader) *NDJSONSource {
	return &NDJSONSource{r: bufio.NewReaderSize(r, 256<<10)}
}

type ndjsonRow struct {
	ItemIndex *int64         `json:"item_index"`
	Label     jsontext.Value `json:"label"`
}

// Next implements RowSource.
func (s *NDJSONSource) Next() (JobRow, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return JobRow{}, err
		}
		s.line++
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > maxLine {
			return JobRow{}, &RowError{Row: s.line, Field: "item_index", Message: fmt.Sprintf("line longer than %d bytes", maxLine)}
		}
		var r ndjsonRow
		if err := json.Unmarshal(line, &r, strictjson.Options); err != nil {
			field := "item_index"
			var se *json.SemanticError
			if errors.As(err, &se) && strings.HasPrefix(string(se.JSONPointer), "/label") {
				field = "label"
			}
			return JobRow{}, &RowError{Row: s.line, Field: field, Message: jsonMessage(err)}
		}
		if r.ItemIndex == nil {
			return JobRow{}, &RowError{Row: s.line, Field: "item_index", Message: "is required"}
		}
		if *r.ItemIndex < 0 || *r.ItemIndex > 1<<31-1 {
			return JobRow{}, &RowError{Row: s.line, Field: "item_index", Message: fmt.Sprintf("must be a whole number from 0, got %d", *r.ItemIndex)}
		}
		if r.Label == nil {
			return JobRow{}, &RowError{Row: s.line, Field: "label", Message: "is required"}
		}
		v, ok := ParseJSON(r.Label)
		if !ok {
			return JobRow{}, &RowError{Row: s.line, Field: "label", Message: labelMessage(string(r.Label))}
		}
		return JobRow{ItemIndex: int(*r.ItemIndex), Label: v}, nil
	}
}

// Row returns the line of the row that Next returned last (1-based).
func (s *NDJSONSource) Row() int { return s.line }

// ParseJSON reads a JSON label: "positive", "negative" (exactly these strings), 1 or 0.
func ParseJSON(v jsontext.Value) (int, bool) {
	switch string(bytes.TrimSpace(v)) {
	case `"positive"`, "1":
		return Positive, true
	case `"negative"`, "0":
		return Negative, true
	}
	return 0, false
}

func labelMessage(got string) string {
	if len(got) > 32 {
		got = got[:32] + "…"
	}
	return fmt.Sprintf(`must be "positive", "negative", 1 or 0, got %s`, got)
}

func jsonMessage(err error) string {
	var se *json.SemanticError
	if errors.As(err, &se) {
		if se.JSONKind != 0 && se.GoType != nil {
			return fmt.Sprintf("must be a whole number, got %s", se.JSONKind.String())
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

// CSVSource reads one label per record: item_index,label (label positive, negative, 1 or 0),
// with an optional header line (a first record whose item_index is not a number).
type CSVSource struct {
	r     *csv.Reader
	row   int
	first bool
}

// NewCSVSource reads from r.
func NewCSVSource(r io.Reader) *CSVSource {
	cr := csv.NewReader(bufio.NewReaderSize(r, 256<<10))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	cr.TrimLeadingSpace = true
	return &CSVSource{r: cr, first: true}
}

// Next implements RowSource.
func (s *CSVSource) Next() (JobRow, error) {
	for {
		rec, err := s.r.Read()
		if errors.Is(err, io.EOF) {
			return JobRow{}, io.EOF
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return JobRow{}, &RowError{Row: s.row + 1, Field: "item_index", Message: pe.Err.Error()}
			}
			return JobRow{}, err
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		idx, ierr := strconv.ParseInt(strings.TrimSpace(rec[0]), 10, 32)
		if s.first {
			s.first = false
			if ierr != nil && !looksNumeric(rec[0]) {
				continue // a header line: skipped, not counted
			}
		}
		s.row++
		if len(rec) != 2 {
			return JobRow{}, &RowError{Row: s.row, Field: "label", Message: fmt.Sprintf("a row is item_index,label: got %d fields", len(rec))}
		}
		if ierr != nil || idx < 0 {
			return JobRow{}, &RowError{Row: s.row, Field: "item_index", Message: fmt.Sprintf("must be a whole number from 0, got %q", truncate(rec[0], 32))}
		}
		v, ok := Parse(rec[1])
		if !ok {
			return JobRow{}, &RowError{Row: s.row, Field: "label", Message: labelMessage(strconv.Quote(truncate(rec[1], 32)))}
		}
		return JobRow{ItemIndex: int(idx), Label: v}, nil
	}
}

// Row returns the record of the row that Next returned last (1-based, after any header).
func (s *CSVSource) Row() int { return s.row }

// looksNumeric reports whether s starts like a number (a bad item index, not a header).
func looksNumeric(s string) bool {
	s = strings.TrimSpace(s)
	return s != "" && (s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
