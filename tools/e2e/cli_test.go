package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Issue 20: predq, the command-line client, run as a real process against the stack.

// cliRun is one finished predq process.
type cliRun struct {
	stdout, stderr string
	code           int
}

// predq runs the CLI against the stack with its key (env may override or add KEY=VALUE).
func (s *stack) predq(stdin []byte, env []string, args ...string) cliRun {
	s.t.Helper()
	base := []string{"PREDQ_URL=" + s.base, "PREDQ_API_KEY=" + apiKey}
	return runPredq(s.t, stdin, append(base, env...), args...)
}

func runPredq(t *testing.T, stdin []byte, env []string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "predq"), args...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return cliRun{stdout: out.String(), stderr: errb.String(), code: code}
}

// syncBuffer is a bytes.Buffer that a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// csvRows is n sonar rows as CSV, with a header line when header is set.
func csvRows(xs [][]float64, n int, header bool) []byte {
	var b bytes.Buffer
	if header {
		for j := range len(xs[0]) {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "attr%d", j+1)
		}
		b.WriteByte('\n')
	}
	for i := range n {
		for j, x := range xs[i%len(xs)] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// firstLine is the job id that submit prints on stdout.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func TestCLISubmitWaitDownload(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "5000"}})
	xs, _ := sonar(t)

	t.Run("a 20,000-row CSV with a header: results equal the API's; run twice, submitted once", func(t *testing.T) {
		in := writeFile(t, "rows.csv", csvRows(xs, 20_000, true))
		out := filepath.Join(t.TempDir(), "results.csv")
		args := []string{"jobs", "submit", in, "--model", "v1.0.0", "--metadata", "team=risk", "--wait", "--out", out}
		r := s.predq(nil, nil, args...)
		require.Equal(t, 0, r.code, "stdout %s\nstderr %s", r.stdout, r.stderr)
		id := firstLine(r.stdout)
		require.Contains(t, r.stderr, "job "+id+" succeeded: 20000 rows, 20000 processed, 0 failed")
		require.Contains(t, r.stderr, "wrote 20000 results to "+out)
		// Without a terminal: a line per 10% at most, no bar.
		require.LessOrEqual(t, strings.Count(r.stderr, "% ("), 10, r.stderr)
		require.NotContains(t, r.stderr, "\r")

		got, err := os.ReadFile(out)
		require.NoError(t, err)
		api := s.call("GET", "/api/v1/jobs/"+id+"/results", nil, map[string]string{"Accept": "text/csv"})
		require.Equal(t, http.StatusOK, api.status)
		require.Equal(t, string(api.body), string(got))
		require.Equal(t, 20_001, bytes.Count(got, []byte("\n")))
		require.Equal(t, "v1.0.0", s.job(id).ModelVersion)

		again := s.predq(nil, nil, args...)
		require.Equal(t, 0, again.code, again.stderr)
		require.Equal(t, id, firstLine(again.stdout))
		require.Contains(t, again.stderr, "already submitted")
		require.Equal(t, 1, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`))

		// --join: each result followed by its input row, from the file read again.
		joined := filepath.Join(t.TempDir(), "joined.csv")
		r = s.predq(nil, nil, "jobs", "wait", id, "--out", joined, "--join", in)
		require.Equal(t, 0, r.code, r.stderr)
		f, err := os.Open(joined)
		require.NoError(t, err)
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		require.NoError(t, err)
		require.Len(t, recs, 20_001)
		require.Equal(t, "index", recs[0][0])
		require.Equal(t, "attr1", recs[0][7])
		apiRecs, err := csv.NewReader(bytes.NewReader(api.body)).ReadAll()
		require.NoError(t, err)
		for i := 1; i < len(recs); i += 997 {
			require.Equal(t, apiRecs[i], recs[i][:7], "row %d", i)
			require.Equal(t, strconv.FormatFloat(xs[(i-1)%len(xs)][0], 'g', -1, 64), recs[i][7], "row %d", i)
			require.Equal(t, strconv.FormatFloat(xs[(i-1)%len(xs)][59], 'g', -1, 64), recs[i][66], "row %d", i)
		}
	})

	t.Run("a 200,000-row NDJSON: results equal the API's", func(t *testing.T) {
		in := writeFile(t, "rows.ndjson", ndjsonRows(xs, 200_000))
		out := filepath.Join(t.TempDir(), "results.ndjson")
		r := s.predq(nil, nil, "jobs", "submit", in, "--wait", "--out", out)
		require.Equal(t, 0, r.code, "stdout %s\nstderr %s", r.stdout, r.stderr)
		id := firstLine(r.stdout)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		api := s.call("GET", "/api/v1/jobs/"+id+"/results", nil, map[string]string{"Accept": "application/x-ndjson"})
		require.Equal(t, http.StatusOK, api.status)
		require.Equal(t, 200_000, bytes.Count(got, []byte("\n")))
		require.Equal(t, string(api.body), string(got))
		t.Logf("stderr of the 200,000-row submit:\n%s", r.stderr)
	})

	t.Run("--output json on read commands", func(t *testing.T) {
		r := s.predq(nil, nil, "jobs", "list", "--output", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var jobs []jobObject
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &jobs), r.stdout)
		require.Len(t, jobs, 2)
		r = s.predq(nil, nil, "jobs", "list", "--output", "table")
		require.Equal(t, 0, r.code, r.stderr)
		require.Regexp(t, `(?m)^ID +STATUS +MODEL +TOTAL +DONE +FAILED +CREATED$`, r.stdout)
		require.Regexp(t, `(?m)^`+jobs[0].ID+` +succeeded +v`, r.stdout)
		r = s.predq(nil, nil, "jobs", "get", jobs[0].ID) // piped: JSON by default
		require.Equal(t, 0, r.code, r.stderr)
		var j jobObject
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &j), r.stdout)
		require.Equal(t, jobs[0].ID, j.ID)
		require.Equal(t, "succeeded", j.Status)
		r = s.predq(nil, nil, "models", "list", "--output", "ndjson")
		require.Equal(t, 0, r.code, r.stderr)
		require.GreaterOrEqual(t, strings.Count(r.stdout, "\n"), 2)
		require.Contains(t, r.stdout, `"version":"v1.0.0"`)
		r = s.predq(nil, nil, "predict", "--features", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(xs[0])), ","), "[]"), "--model", "v1.0.0")
		require.Equal(t, 0, r.code, r.stderr)
		var p struct {
			ModelVersion string  `json:"model_version"`
			Confidence   float64 `json:"confidence"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &p), r.stdout)
		require.Equal(t, "v1.0.0", p.ModelVersion)
		var stored struct {
			RequestID    string `json:"request_id"`
			ModelVersion string `json:"model_version"`
		}
		var pr struct {
			RequestID string `json:"request_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &pr))
		r = s.predq(nil, nil, "predictions", "get", pr.RequestID)
		require.Equal(t, 0, r.code, r.stderr)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &stored), r.stdout)
		require.Equal(t, pr.RequestID, stored.RequestID)
		require.Equal(t, "v1.0.0", stored.ModelVersion)
		// predict from stdin, a predict body
		body, err := json.Marshal(map[string]any{"features": xs[1], "model_version": "v2.0.0"})
		require.NoError(t, err)
		r = s.predq(body, nil, "predict")
		require.Equal(t, 0, r.code, r.stderr)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &p), r.stdout)
		require.Equal(t, "v2.0.0", p.ModelVersion)

		r = s.predq(nil, nil, "models", "promote", "v1.0.0")
		require.Equal(t, 0, r.code, r.stderr)
		var m struct {
			Version string   `json:"version"`
			Aliases []string `json:"aliases"`
		}
		require.Eventually(t, func() bool {
			r = s.predq(nil, nil, "models", "get", "latest")
			return r.code == 0 && json.Unmarshal([]byte(r.stdout), &m) == nil && m.Version == "v1.0.0"
		}, 30*time.Second, 100*time.Millisecond, "latest -> v1.0.0: %s %s", r.stdout, r.stderr)
		require.Contains(t, m.Aliases, "latest")
		r = s.predq(nil, nil, "models", "get", "v9.9.9")
		require.Equal(t, 1, r.code, r.stderr)
		require.Contains(t, r.stderr, "(404)")

		r = s.predq(nil, nil, "health")
		require.Equal(t, 0, r.code, r.stderr)
	})

	t.Run("a JSON file, with its options in its body", func(t *testing.T) {
		var b bytes.Buffer
		b.WriteString(`{"model_version":"v1.0.0","samples":[`)
		for i := range 500 {
			if i > 0 {
				b.WriteByte(',')
			}
			f, err := json.Marshal(map[string]any{"features": xs[i%len(xs)]})
			require.NoError(t, err)
			b.Write(f)
		}
		b.WriteString(`],"metadata":{"source":"cli"}}`)
		in := writeFile(t, "rows.json", b.Bytes())
		out := filepath.Join(t.TempDir(), "joined.ndjson")
		r := s.predq(nil, nil, "jobs", "submit", in, "--out", out, "--join")
		require.Equal(t, 0, r.code, r.stderr)
		id := firstLine(r.stdout)
		require.Equal(t, "v1.0.0", s.job(id).ModelVersion)
		lines := strings.Split(strings.TrimSpace(readString(t, out)), "\n")
		require.Len(t, lines, 500)
		var last struct {
			Index        int       `json:"index"`
			ModelVersion string    `json:"model_version"`
			Features     []float64 `json:"features"`
		}
		require.NoError(t, json.Unmarshal([]byte(lines[499]), &last))
		require.Equal(t, 499, last.Index)
		require.Equal(t, xs[499%len(xs)], last.Features)
	})
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func TestCLICancel(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "1"}})
	xs, _ := sonar(t)
	r := s.predq(ndjsonRows(xs, 20_000), nil, "jobs", "submit", "-")
	require.Equal(t, 0, r.code, r.stderr)
	id := firstLine(r.stdout)
	require.Eventually(t, func() bool { return s.job(id).Processed > 0 }, 30*time.Second, 20*time.Millisecond)
	r = s.predq(nil, nil, "jobs", "cancel", id)
	require.Equal(t, 0, r.code, r.stderr)
	var j jobObject
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &j), r.stdout)
	require.Equal(t, "cancelled", j.Status)
	require.Equal(t, "cancelled", s.job(id).Status)
	// Waiting for a cancelled job is a failure of the job: exit 1, its status printed.
	r = s.predq(nil, nil, "jobs", "wait", id)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "job "+id+" cancelled")
	// A second cancel is the server's 409, printed as its title.
	r = s.predq(nil, nil, "jobs", "cancel", id)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "(409)")

	// Ctrl-C (SIGINT) while waiting, stdin not a terminal: no prompt, the job left running,
	// exit 130.
	in := writeFile(t, "rows.ndjson", ndjsonRows(xs, 20_000))
	cmd := exec.Command(filepath.Join(binDir, "predq"), "jobs", "submit", in, "--wait")
	cmd.Env = append(os.Environ(), "PREDQ_URL="+s.base, "PREDQ_API_KEY="+apiKey, "XDG_CONFIG_HOME="+t.TempDir())
	var errb syncBuffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, errb.String())
	id = strings.TrimSpace(line)
	require.Eventually(t, func() bool { return s.job(id).Processed > 0 }, 60*time.Second, 20*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, errb.String())
	require.Equal(t, 130, ee.ExitCode(), errb.String())
	require.Contains(t, errb.String(), "job "+id+" left running")
	require.NotContains(t, errb.String(), "Cancel job")
	require.Equal(t, "running", s.job(id).Status)
	require.Equal(t, 0, s.predq(nil, nil, "jobs", "cancel", id).code)
}

func TestCLIErrorsAndExitCodes(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true})
	xs, _ := sonar(t)

	t.Run("a bad row: the server's field error, exit 1, no job", func(t *testing.T) {
		lines := strings.Split(string(ndjsonRows(xs, 1000)), "\n")
		lines[10] = `{"features":[1,2,3]}`
		in := writeFile(t, "bad.ndjson", []byte(strings.Join(lines, "\n")))
		r := s.predq(nil, nil, "jobs", "submit", in, "--wait")
		require.Equal(t, 1, r.code, r.stderr)
		require.Contains(t, r.stderr, "(422)")
		require.Regexp(t, `(?m)^  rows\[11\]\.features: .+$`, r.stderr)
		require.Empty(t, r.stdout)
		require.Zero(t, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`))
	})
	t.Run("a gzip CSV without a header, by its extension", func(t *testing.T) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, err := zw.Write(csvRows(xs, 250, false))
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		in := writeFile(t, "rows.csv.gz", gz.Bytes())
		r := s.predq(nil, nil, "jobs", "submit", in, "--threshold", "0.9", "--output", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var j jobObject
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &j), r.stdout)
		require.Equal(t, 250, j.Total)
		require.Equal(t, 250, s.job(j.ID).Total)
	})
	t.Run("a wrong key: exit 4", func(t *testing.T) {
		r := s.predq(nil, []string{"PREDQ_API_KEY=wrong-key-0123456789"}, "jobs", "list")
		require.Equal(t, 4, r.code, r.stderr)
		require.Contains(t, r.stderr, "(401)")
		require.NotContains(t, r.stderr, "wrong-key-0123456789")
	})
	t.Run("the server down: exit 3", func(t *testing.T) {
		down := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
		r := runPredq(t, nil, []string{"PREDQ_URL=" + down, "PREDQ_API_KEY=" + apiKey}, "jobs", "list")
		require.Equal(t, 3, r.code, r.stderr)
		in := writeFile(t, "rows.csv", csvRows(xs, 10, false))
		r = runPredq(t, nil, []string{"PREDQ_URL=" + down, "PREDQ_API_KEY=" + apiKey}, "jobs", "submit", in, "--wait")
		require.Equal(t, 3, r.code, r.stderr)
	})
	t.Run("usage: exit 2", func(t *testing.T) {
		for _, args := range [][]string{{"jobs", "submit"}, {"jobs", "submit", "rows.txt"}, {"nope"}, {"jobs", "list", "--bogus"}, {"jobs", "list", "-o", "yaml"}} {
			r := s.predq(nil, nil, args...)
			require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		}
	})
	t.Run("login stores the key with mode 0600 and never prints it", func(t *testing.T) {
		cfg := t.TempDir()
		r := runPredq(t, []byte(apiKey+"\n"), []string{"XDG_CONFIG_HOME=" + cfg, "PREDQ_URL=" + s.base}, "login")
		require.Equal(t, 0, r.code, r.stderr)
		require.NotContains(t, r.stdout+r.stderr, apiKey)
		st, err := os.Stat(filepath.Join(cfg, "predq", "profile.json"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		r = runPredq(t, nil, []string{"XDG_CONFIG_HOME=" + cfg}, "models", "list", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "v1.0.0")
		r = runPredq(t, []byte("wrong-key-0123456789\n"), []string{"XDG_CONFIG_HOME=" + t.TempDir(), "PREDQ_URL=" + s.base}, "login")
		require.Equal(t, 4, r.code, r.stderr)
	})
}

// The event stream drops when the api restarts; predq jobs wait reconnects with
// Last-Event-ID and follows the job to its end.
func TestCLIWaitSurvivesAnAPIRestart(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "1"}})
	xs, _ := sonar(t)
	r := s.predq(ndjsonRows(xs, 50_000), nil, "jobs", "submit", "-")
	require.Equal(t, 0, r.code, r.stderr)
	id := firstLine(r.stdout)
	out := filepath.Join(t.TempDir(), "results.ndjson")
	cmd := exec.Command(filepath.Join(binDir, "predq"), "jobs", "wait", id, "--out", out)
	cmd.Env = append(os.Environ(), "PREDQ_URL="+s.base, "PREDQ_API_KEY="+apiKey, "XDG_CONFIG_HOME="+t.TempDir())
	var errb syncBuffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// predq follows the job (its first progress line), and the job has started.
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "job "+id+" running: ") }, 60*time.Second, 20*time.Millisecond)
	// A crash, not a graceful stop (which lets an event stream run to the job's end).
	api := s.procs["api"]
	require.NoError(t, api.Cmd.Process.Kill())
	<-api.Done()
	s.start("api")
	s.awaitUp("api", "PORT", "/health/live")
	require.Equal(t, "http://127.0.0.1:"+s.env["PORT"], s.base, "the api came back on its port")
	select {
	case err := <-exited:
		require.NoError(t, err, errb.String())
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("predq jobs wait did not end:\n%s", errb.String())
	}
	require.Contains(t, errb.String(), "reconnecting")
	require.Contains(t, errb.String(), "job "+id+" succeeded: 50000 rows, 50000 processed")
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	res := s.call("GET", "/api/v1/jobs/"+id+"/results", nil, map[string]string{"Accept": "application/x-ndjson"})
	require.Equal(t, string(res.body), string(got))
	t.Logf("predq's stderr:\n%s", errb.String())
}
