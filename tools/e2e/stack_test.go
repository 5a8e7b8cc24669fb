// Package e2e runs the whole pipeline as real processes: the api, worker and scheduler
// binaries, built once per test run, against a fresh Postgres database and a throwaway Redis
// per test, driven over HTTP as a client would.
package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/tools/internal/proc"
)

const (
	apiKey   = "e2e-key-0123456789abcdef"
	otherKey = "other-key-0123456789abc" // a second API key, which sees none of the first one's data
)

// binDir holds the binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "predq-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/api", "./cmd/worker", "./cmd/scheduler", "./cmd/predq")
	build.Dir = "../.."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stack is a running pipeline.
type stack struct {
	t     *testing.T
	env   map[string]string
	base  string            // the api's URL
	redis *redistest.Server // nil when the test brought its own (stackOpts.redisURL)
	dbURL string
	procs map[string]*proc.Proc
}

type stackOpts struct {
	env       map[string]string
	redisURL  string // a Redis of the test's own (Sentinel, Cluster); a throwaway server when empty
	noWorker  bool
	scheduler bool
}

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	port, err := localsvc.FreePort()
	require.NoError(t, err)
	s := &stack{t: t, dbURL: pgtest.NewURL(t), procs: map[string]*proc.Proc{}}
	redisURL := o.redisURL
	if redisURL == "" {
		s.redis = redistest.New(t)
		redisURL = s.redis.URL
	}
	s.env = map[string]string{
		"PORT":                   strconv.Itoa(port),
		"GRPC_PORT":              strconv.Itoa(freePort(t)),
		"DATABASE_URL":           s.dbURL,
		"REDIS_URL":              redisURL,
		"MODEL_PATH":             mustAbs(t, "../../models"),
		"API_KEYS":               "e2e:" + apiKey + ",other:" + otherKey,
		"LOG_LEVEL":              "info",
		"WORKER_METRICS_PORT":    strconv.Itoa(freePort(t)),
		"SCHEDULER_METRICS_PORT": strconv.Itoa(freePort(t)),
		"WEBHOOK_SECRET":         "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"WEBHOOK_ALLOW_PRIVATE":  "true",
		"JOB_CHUNK_SIZE":         "1000",
		"DB_POOL_SIZE":           "20",
		// Admission control sheds predicts when the api is saturated, as it is when the
		// tests run in parallel on two cores; the tests that expect every predict answered
		// run without it, and TestOverloadShedsBulkFirstAndLosesNothing turns it on.
		"ADMISSION_CONTROL": "false",
	}
	for k, v := range o.env {
		s.env[k] = v
	}
	// Registered first, so that a stack that fails to start is stopped and its logs shown.
	t.Cleanup(func() {
		for name := range s.procs {
			s.stop(name)
		}
		if t.Failed() {
			for name, p := range s.procs {
				t.Logf("---- %s log (last 4 KB) ----\n%s", name, p.Tail(4096))
			}
		}
	})
	s.start("api")
	if !o.noWorker {
		s.start("worker")
	}
	if o.scheduler {
		s.start("scheduler")
	}
	s.awaitUp("api", "PORT", "/health/live")
	if !o.noWorker {
		s.awaitUp("worker", "WORKER_METRICS_PORT", "/health/live")
	}
	if o.scheduler {
		s.awaitUp("scheduler", "SCHEDULER_METRICS_PORT", "/health/live")
	}
	return s
}

// awaitUp waits until the process answers 200 on path at the port in env[portKey]. A port
// picked free can be taken before the process binds it: the tests run in parallel and open
// many client connections, each on an ephemeral port. When the process exits saying so, it is
// started again on another free port.
func (s *stack) awaitUp(name, portKey, path string) {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		p := s.procs[name]
		url := "http://127.0.0.1:" + s.env[portKey] + path
		err := p.WaitHTTP(context.Background(), url, 30*time.Second)
		if err == nil {
			if portKey == "PORT" {
				s.base = "http://127.0.0.1:" + s.env["PORT"]
			}
			return
		}
		if errors.Is(err, proc.ErrExited) && attempt < 5 && strings.Contains(p.Log(), "address already in use") {
			s.t.Logf("%s: port %s was taken before it could bind it; trying another", name, s.env[portKey])
			s.env[portKey] = strconv.Itoa(freePort(s.t))
			if name == "api" { // the taken port may have been its gRPC one
				s.env["GRPC_PORT"] = strconv.Itoa(freePort(s.t))
			}
			s.start(name)
			continue
		}
		state := "still running"
		if p.Exited() {
			state = "exited: " + p.Cmd.ProcessState.String()
		}
		s.t.Fatalf("%s did not answer on %s (%s); its log:\n%s", name, url, state, p.Tail(4096))
	}
}

func freePort(t *testing.T) int {
	p, err := localsvc.FreePort()
	require.NoError(t, err)
	return p
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	require.NoError(t, err)
	return a
}

// start runs a binary with the stack's environment (and extra KEY=VALUE pairs).
func (s *stack) start(name string, extra ...string) *proc.Proc {
	s.t.Helper()
	bin := strings.TrimRight(name, "0123456789") // "worker2" runs the worker binary
	cmd := exec.Command(filepath.Join(binDir, bin))
	cmd.Dir = mustAbs(s.t, "../..")
	cmd.Env = os.Environ()
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, extra...) // the last value of a key wins
	p, err := proc.Start(name, cmd, 0)
	require.NoError(s.t, err)
	s.procs[name] = p
	return p
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after 30 s).
func (s *stack) stop(name string) { s.procs[name].Stop() }

func (s *stack) logs(name string) string {
	if p := s.procs[name]; p != nil {
		return p.Tail(4096)
	}
	return ""
}

// peakRSS is the process's peak resident set size in bytes (VmHWM).
func (s *stack) peakRSS(name string) int64 {
	hwm, _, err := proc.PeakRSS(s.procs[name].PID())
	require.NoError(s.t, err)
	return hwm
}

// response is one HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), string(r.body))
}

// call sends a request with the API key; body may be nil, []byte, string or a value to encode
// as JSON.
func (s *stack) call(method, path string, body any, header map[string]string) response {
	s.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		enc, err := json.Marshal(b)
		require.NoError(s.t, err)
		rd, ct = bytes.NewReader(enc), "application/json"
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// jobObject is the part of the job object the tests read.
type jobObject struct {
	ID            string  `json:"id"`
	Status        string  `json:"status"`
	ModelVersion  string  `json:"model_version"`
	Total         int     `json:"total"`
	Processed     int     `json:"processed"`
	Failed        int     `json:"failed"`
	LowConfidence int     `json:"low_confidence"`
	Progress      float64 `json:"progress"`
	Error         *string `json:"error"`
	Webhook       *struct {
		URL      string `json:"url"`
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
	} `json:"webhook"`
}

func (s *stack) job(id string) jobObject {
	s.t.Helper()
	r := s.call("GET", "/api/v1/jobs/"+id, nil, nil)
	require.Equal(s.t, http.StatusOK, r.status, string(r.body))
	var j jobObject
	r.decode(s.t, &j)
	return j
}

// waitJob waits until the job is terminal and returns it.
func (s *stack) waitJob(id string, within time.Duration) jobObject {
	s.t.Helper()
	var j jobObject
	require.Eventually(s.t, func() bool {
		j = s.job(id)
		return j.Status == "succeeded" || j.Status == "failed" || j.Status == "cancelled"
	}, within, 50*time.Millisecond, "job %s did not finish: %+v\nworker: %s", id, j, s.logs("worker"))
	return j
}

// sonar reads the shipped data set.
func sonar(t *testing.T) ([][]float64, []bool) {
	t.Helper()
	f, err := os.Open("../../data/sonar.csv")
	require.NoError(t, err)
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	xs := make([][]float64, len(recs))
	ys := make([]bool, len(recs))
	for i, r := range recs {
		xs[i] = make([]float64, 60)
		for j := range 60 {
			xs[i][j], err = strconv.ParseFloat(r[j], 64)
			require.NoError(t, err)
		}
		ys[i] = r[60] == "M"
	}
	return xs, ys
}

func ndjsonRows(xs [][]float64, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		b.WriteString(`{"features":[`)
		for j, x := range xs[i%len(xs)] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		}
		b.WriteString("]}\n")
	}
	return b.Bytes()
}

// scrape returns the text of a /metrics endpoint.
func scrape(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// metricValue sums every sample of the metric family name in a Prometheus text scrape (for
// a histogram, pass name_count or name_sum).
func metricValue(text, name string) float64 {
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || len(line) == len(name) {
			continue
		}
		if c := line[len(name)]; c != '{' && c != ' ' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += v
		}
	}
	return total
}
