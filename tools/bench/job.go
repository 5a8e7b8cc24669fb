package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// ndjsonReader streams n NDJSON rows, row i being sonar row i mod 208 as a JSON array of its
// 60 numbers as written in the CSV file. It never holds more than one row.
type ndjsonReader struct {
	lines [][]byte
	n, i  int
	cur   []byte
}

func newNDJSONReader(lines [][]byte, n int) *ndjsonReader {
	return &ndjsonReader{lines: lines, n: n}
}

func (r *ndjsonReader) Read(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		if len(r.cur) == 0 {
			if r.i == r.n {
				if written == 0 {
					return 0, io.EOF
				}
				return written, nil
			}
			r.cur = r.lines[r.i%len(r.lines)]
			r.i++
		}
		c := copy(p[written:], r.cur)
		r.cur = r.cur[c:]
		written += c
	}
	return written, nil
}

// ndjsonSize is the byte size of the stream of n rows.
func ndjsonSize(lines [][]byte, n int) int64 {
	var per int64
	for _, l := range lines {
		per += int64(len(l))
	}
	full, rest := n/len(lines), n%len(lines)
	size := per * int64(full)
	for _, l := range lines[:rest] {
		size += int64(len(l))
	}
	return size
}

// uploadResult is what `bench upload` prints.
type uploadResult struct {
	Status  int     `json:"status"`
	JobID   string  `json:"job_id"`
	Rows    int     `json:"rows"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// StartUnixNano is when the request started.
	StartUnixNano int64  `json:"start_unix_nano"`
	Body          string `json:"body,omitempty"` // the answer, when it is not a 202
}

// uploadCommand is `bench upload`: POST an NDJSON job of -rows rows to the api, streamed,
// and print the uploadResult.
func uploadCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "", "the api's base URL (loopback)")
	key := fs.String("key", "", "API key")
	rows := fs.Int("rows", 1000, "rows")
	data := fs.String("data", "data/sonar.csv", "sonar CSV file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*base)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("upload: %q is not a loopback URL", *base)
	}
	lines, err := readSonarNDJSON(*data)
	if err != nil {
		return err
	}
	size := ndjsonSize(lines, *rows)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *base+"/api/v1/jobs?model_version=latest", newNDJSONReader(lines, *rows))
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+*key)
	client := &http.Client{Timeout: time.Hour}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("upload: read answer: %w", err)
	}
	r := uploadResult{Status: resp.StatusCode, Rows: *rows, Bytes: size, Seconds: time.Since(start).Seconds(), StartUnixNano: start.UnixNano()}
	var j struct {
		ID string `json:"id"`
	}
	if resp.StatusCode == http.StatusAccepted && json.Unmarshal(body, &j) == nil {
		r.JobID = j.ID
	} else {
		r.Body = string(body)
	}
	return json.NewEncoder(stdout).Encode(r)
}

// jobState is the part of the job object the bench reads.
type jobState struct {
	Status    string  `json:"status"`
	Total     int     `json:"total"`
	Processed int     `json:"processed"`
	Failed    int     `json:"failed"`
	Error     *string `json:"error"`
	// FinishedAt is when the job ended (Postgres's clock).
	FinishedAt *time.Time `json:"finished_at"`
}

// waitJob polls the job every 100 ms until it is finished, and returns it with the time it
// was first seen finished.
func waitJob(ctx context.Context, base, key, id string, timeout time.Duration) (jobState, time.Time, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/jobs/"+id, nil)
		if err != nil {
			return jobState{}, time.Time{}, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		now := time.Now()
		if err != nil {
			return jobState{}, now, err
		}
		var j jobState
		err = json.NewDecoder(resp.Body).Decode(&j)
		resp.Body.Close()
		if err != nil {
			return jobState{}, now, fmt.Errorf("job %s: %w", id, err)
		}
		switch j.Status {
		case "succeeded", "failed", "cancelled":
			return j, now, nil
		}
		if now.After(deadline) {
			return j, now, fmt.Errorf("job %s still %s after %s (%d/%d processed)", id, j.Status, timeout, j.Processed, j.Total)
		}
		select {
		case <-ctx.Done():
			return j, now, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// copyCeiling writes n result rows into job_results with one pgx CopyFrom, for a job row
// cloned from jobID (the foreign key holds), and returns how long the COPY took. The rows
// are generated as the copy reads them.
func copyCeiling(ctx context.Context, dbURL, jobID string, n int) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	clone, err := uuid.NewV7()
	if err != nil {
		return 0, err
	}
	// The clone of the measured job: its own id, so the ceiling writes the same table with
	// the same key and foreign key.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`CREATE TEMP TABLE bench_job AS SELECT * FROM jobs WHERE id = $1`, []any{jobID}},
		{`UPDATE bench_job SET id = $1`, []any{clone}},
		{`INSERT INTO jobs SELECT * FROM bench_job`, nil},
		{`DROP TABLE bench_job`, nil},
	} {
		if _, err := conn.Exec(ctx, q.sql, q.args...); err != nil {
			return 0, fmt.Errorf("copy ceiling: clone job: %w", err)
		}
	}
	// Each row's values in the types pgx encodes directly (a uuid.UUID would go through
	// database/sql's driver.Valuer, several times slower).
	i := 0
	row := make([]any, 5)
	id := pgtype.UUID{Bytes: clone, Valid: true}
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		p := float64(i%1000) / 1000
		row[0], row[1], row[2], row[3], row[4] = id, int32(i), p, max(p, 1-p), false
		i++
		return row, nil
	})
	start := time.Now()
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"job_results"}, []string{"job_id", "item_index", "prediction", "confidence", "low_confidence"}, src)
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("copy ceiling: %w", err)
	}
	if copied != int64(n) {
		return 0, fmt.Errorf("copy ceiling: copied %d rows, want %d", copied, n)
	}
	return took, nil
}

// readSonarNDJSON returns each sonar row as an NDJSON line: its 60 numbers as the CSV file
// writes them.
func readSonarNDJSON(path string) ([][]byte, error) {
	recs, err := readSonarRecords(path)
	if err != nil {
		return nil, err
	}
	lines := make([][]byte, len(recs))
	for i, r := range recs {
		var b bytes.Buffer
		b.WriteByte('[')
		for j, f := range r[:len(r)-1] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(f)
		}
		b.WriteString("]\n")
		lines[i] = b.Bytes()
	}
	return lines, nil
}

// itoa formats n with thousands separators.
func itoa(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}
