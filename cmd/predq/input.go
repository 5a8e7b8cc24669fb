package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/predq/predq/internal/client"
)

// formatOf is the submission format of a file, by its extension (after any .gz), or of
// --format when given.
func formatOf(path, flag string) (string, error) {
	switch strings.ToLower(flag) {
	case "csv":
		return client.FormatCSV, nil
	case "ndjson", "jsonl":
		return client.FormatNDJSON, nil
	case "json":
		return client.FormatJSON, nil
	case "":
	default:
		return "", usagef("--format must be csv, ndjson or json, got %q", flag)
	}
	if path == "-" {
		return client.FormatNDJSON, nil
	}
	name := strings.TrimSuffix(strings.ToLower(path), ".gz")
	switch filepath.Ext(name) {
	case ".csv":
		return client.FormatCSV, nil
	case ".ndjson", ".jsonl":
		return client.FormatNDJSON, nil
	case ".json":
		return client.FormatJSON, nil
	}
	return "", usagef("cannot tell the format of %s from its extension (.csv, .ndjson, .jsonl, .json, optionally .gz): give --format", path)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
	// onRead, when set, is told of each read's byte count.
	onRead func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if c.onRead != nil && n > 0 {
		c.onRead(n)
	}
	return n, err
}

// input is an opened submission: its decoded rows' bytes, and the raw bytes read so far (for
// the upload bar) out of size (-1 when unknown, as for stdin).
type input struct {
	body io.Reader
	raw  *countingReader
	size int64
	cl   func() error
}

func (in *input) Close() error { return in.cl() }

// openInput opens path ("-" for stdin), decompressing it when its name ends in .gz.
func openInput(path string, stdin io.Reader) (*input, error) {
	var (
		r    io.Reader
		size int64 = -1
		cl         = func() error { return nil }
	)
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("%w", err)
		}
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		r, cl = f, f.Close
	}
	raw := &countingReader{r: bufio.NewReaderSize(r, 256<<10)}
	in := &input{body: raw, raw: raw, size: size, cl: cl}
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		zr, err := gzip.NewReader(raw)
		if err != nil {
			_ = cl()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		in.body = zr
	}
	return in, nil
}

// defaultIdempotencyKey derives the key of a submission from the file's bytes and the
// request's format and options, so that the same command run again names the same job.
func defaultIdempotencyKey(ctx context.Context, path, format string, o client.SubmitOptions) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usagef("%w", err)
	}
	defer f.Close()
	h := sha256.New()
	fmt.Fprintf(h, "predq-submit-v1\n%s\n%s\n", format, o.Query().Encode())
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return "predq-" + hex.EncodeToString(h.Sum(nil))[:48], nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// rowReader reads the feature vectors of a submission file again, as the server counts them,
// each as its numbers' text: for --join.
type rowReader interface {
	// Next returns the next row's numbers (the slice may be reused) or io.EOF.
	Next() ([]string, error)
	// Header names the columns (nil when the input has none).
	Header() []string
}

func newRowReader(format string, r io.Reader) (rowReader, error) {
	switch format {
	case client.FormatCSV:
		cr := csv.NewReader(bufio.NewReaderSize(r, 256<<10))
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		cr.TrimLeadingSpace = true
		return &csvRows{r: cr, first: true}, nil
	case client.FormatNDJSON:
		br := bufio.NewReaderSize(r, 256<<10)
		return &ndjsonRows{r: br}, nil
	default:
		return newJSONRows(r)
	}
}

type csvRows struct {
	r      *csv.Reader
	first  bool
	header []string
	out    []string
}

func (c *csvRows) Header() []string { return c.header }

func (c *csvRows) Next() ([]string, error) {
	for {
		rec, err := c.r.Read()
		if err != nil {
			return nil, err
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		c.out = c.out[:0]
		numeric := true
		for _, f := range rec {
			f = strings.TrimSpace(f)
			if _, err := strconv.ParseFloat(f, 64); err != nil {
				numeric = false
			}
			c.out = append(c.out, f)
		}
		if c.first {
			c.first = false
			if !numeric {
				c.header = append([]string(nil), c.out...)
				continue
			}
		}
		return c.out, nil
	}
}

type ndjsonRows struct {
	r   *bufio.Reader
	out []string
}

func (n *ndjsonRows) Header() []string { return nil }

func (n *ndjsonRows) Next() ([]string, error) {
	for {
		line, err := n.r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			return nil, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			if err != nil {
				return nil, err
			}
			continue
		}
		return n.parse(line)
	}
}

func (n *ndjsonRows) parse(line []byte) ([]string, error) {
	var nums []json.Number
	if line[0] == '[' {
		if err := decodeNumbers(line, &nums); err != nil {
			return nil, err
		}
	} else {
		var row struct {
			Features []json.Number `json:"features"`
		}
		if err := decodeNumbers(line, &row); err != nil {
			return nil, err
		}
		nums = row.Features
	}
	n.out = n.out[:0]
	for _, x := range nums {
		n.out = append(n.out, x.String())
	}
	return n.out, nil
}

func decodeNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("read the input again for --join: %w", err)
	}
	return nil
}

// jsonRows streams the samples of a JSON body ({"samples":[{"features":[…]},…],…}).
type jsonRows struct {
	d       *json.Decoder
	inArray bool
	out     []string
}

func newJSONRows(r io.Reader) (*jsonRows, error) {
	d := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	d.UseNumber()
	return &jsonRows{d: d}, nil
}

func (j *jsonRows) Header() []string { return nil }

func (j *jsonRows) Next() ([]string, error) {
	if !j.inArray {
		if err := j.seekSamples(); err != nil {
			return nil, err
		}
		j.inArray = true
	}
	if !j.d.More() {
		return nil, io.EOF
	}
	var s struct {
		Features []json.Number `json:"features"`
	}
	if err := j.d.Decode(&s); err != nil {
		return nil, fmt.Errorf("read the input again for --join: %w", err)
	}
	j.out = j.out[:0]
	for _, x := range s.Features {
		j.out = append(j.out, x.String())
	}
	return j.out, nil
}

// seekSamples reads the body up to the first element of its "samples" array, skipping the
// members before it.
func (j *jsonRows) seekSamples() error {
	tok, err := j.d.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("read the input again for --join: a JSON body is an object")
	}
	for j.d.More() {
		tok, err := j.d.Token()
		if err != nil {
			return err
		}
		if tok == "samples" {
			tok, err := j.d.Token()
			if err != nil {
				return err
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return errors.New("read the input again for --join: samples is not an array")
			}
			return nil
		}
		var skip json.RawMessage
		if err := j.d.Decode(&skip); err != nil {
			return err
		}
	}
	return errors.New("read the input again for --join: the body has no samples")
}
