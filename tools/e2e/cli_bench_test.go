package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCLISubmitMemory measures the peak RSS of predq uploading a generated NDJSON file
// of PREDQ_BENCH_BYTES bytes (default 2 GiB) from a pipe (jobs submit -), the issue's
// "constant memory for a multi-GB file". The receiver is a sink in this process that reads
// the body to the end, counting its rows, and answers 202 with a job of that many rows: the
// figure is the CLI's, not the server's (whose row limit and store a 2 GB job would measure
// instead). Run with -benchtime 1x:
//
//	cd tools && go test -run '^$' -bench CLISubmitMemory -benchtime 1x ./e2e
func BenchmarkCLISubmitMemory(b *testing.B) {
	size := int64(2 << 30)
	if s := os.Getenv("PREDQ_BENCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	xs := sonarB(b)
	line := ndjsonRows(xs, len(xs)) // one pass over the data set, repeated
	var received, rows atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/jobs" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		br := bufio.NewReaderSize(r.Body, 1<<20)
		var n, lines int64
		for {
			chunk, err := br.ReadSlice('\n')
			n += int64(len(chunk))
			if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
				lines++
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		received.Store(n)
		rows.Store(lines)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"00000000-0000-0000-0000-000000000001","status":"queued","total":%d}`, lines)
	}))
	defer sink.Close()

	for range b.N {
		pr, pw := io.Pipe()
		go func() {
			var written int64
			for written < size {
				n, err := pw.Write(line)
				written += int64(n)
				if err != nil {
					return
				}
			}
			pw.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "predq"), "jobs", "submit", "-")
		cmd.Env = append(os.Environ(), "PREDQ_URL="+sink.URL, "PREDQ_API_KEY=bench", "XDG_CONFIG_HOME="+b.TempDir())
		cmd.Stdin = pr
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		cancel()
		pr.Close()
		if err != nil {
			b.Fatalf("predq: %v\n%s", err, errb.String())
		}
		if received.Load() < size {
			b.Fatalf("the sink received %d bytes of %d", received.Load(), size)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		peakMB := float64(ru.Maxrss) / 1024 // KiB on Linux
		b.ReportMetric(peakMB, "peak_rss_MB")
		b.ReportMetric(float64(received.Load())/(1<<20)/took.Seconds(), "upload_MB/s")
		b.Logf("predq uploaded %d bytes (%d rows) through a pipe in %s; peak RSS %.1f MB", received.Load(), rows.Load(), took.Round(time.Millisecond), peakMB)
	}
}

func sonarB(b *testing.B) [][]float64 {
	b.Helper()
	f, err := os.ReadFile("../../data/sonar.csv")
	if err != nil {
		b.Fatal(err)
	}
	var xs [][]float64
	for _, rec := range bytes.Split(bytes.TrimSpace(f), []byte("\n")) {
		fields := bytes.Split(rec, []byte(","))
		x := make([]float64, 60)
		for j := range 60 {
			if x[j], err = strconv.ParseFloat(string(fields[j]), 64); err != nil {
				b.Fatal(err)
			}
		}
		xs = append(xs, x)
	}
	return xs
}
