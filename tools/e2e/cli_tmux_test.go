package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tmuxTerm is a real terminal (a tmux pane running sh) that a test types into and reads.
type tmuxTerm struct {
	t    *testing.T
	sock string
	env  []string
}

func newTmux(t *testing.T, env []string) *tmuxTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is missing: scripts/ensure-deps.sh installs it (apt-get install tmux)")
	}
	dir, err := os.MkdirTemp("", "predq-tmux-") // short: a socket path is at most 108 bytes
	require.NoError(t, err)
	tm := &tmuxTerm{t: t, sock: filepath.Join(dir, "s"), env: env}
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-S", tm.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	tm.run("new-session", "-d", "-s", "cli", "-x", "150", "-y", "40", "env PS1='$ ' sh")
	return tm
}

func (tm *tmuxTerm) run(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", tm.sock}, args...)...)
	// The server (started by the first command) passes its environment to the shell.
	cmd.Env = append(os.Environ(), tm.env...)
	out, err := cmd.CombinedOutput()
	require.NoError(tm.t, err, "tmux %v: %s", args, out)
	return string(out)
}

// typeLine types s and Enter.
func (tm *tmuxTerm) typeLine(s string) {
	tm.run("send-keys", "-t", "cli", "-l", s)
	tm.run("send-keys", "-t", "cli", "Enter")
}

func (tm *tmuxTerm) screen() string { return tm.run("capture-pane", "-p", "-t", "cli") }

// await polls the screen until cond holds (or fails the test after within).
func (tm *tmuxTerm) await(what string, within time.Duration, cond func(screen string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(within)
	for {
		sc := tm.screen()
		if cond(sc) {
			return sc
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("waited %s for %s; the screen:\n%s", within, what, sc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	barCount = regexp.MustCompile(`\((\d+)/(\d+),`)  // progressbar's "(done/total, N rows/s)"
	exitRe   = regexp.MustCompile(`(?m)^EXIT=(\d+)`) // the shell's "echo EXIT=$?" after predq
	uuidRe   = regexp.MustCompile(`(?m)^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\s*$`)
)

// barDone is the count of the last progress bar on the screen (-1 when there is none).
func barDone(screen string) int {
	m := barCount.FindAllStringSubmatch(screen, -1)
	if len(m) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// Issue 20: predq jobs submit --wait in a real terminal, driven as a person would: the bar
// moves and finishes; then Ctrl-C mid-job and "y" at the prompt cancel the job.
func TestCLIInTerminal(t *testing.T) {
	t.Parallel()
	// One worker slot and small chunks: the job runs long enough to watch.
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "1"}})
	xs, _ := sonar(t)
	small := writeFile(t, "small.ndjson", ndjsonRows(xs, 10_000))
	big := writeFile(t, "big.ndjson", ndjsonRows(xs, 100_000))
	tm := newTmux(t, []string{"PREDQ_URL=" + s.base, "PREDQ_API_KEY=" + apiKey, "XDG_CONFIG_HOME=" + t.TempDir(), "TERM=xterm"})
	predq := filepath.Join(binDir, "predq")

	t.Run("the bar moves and finishes", func(t *testing.T) {
		tm.typeLine(predq + " jobs submit " + small + " --wait; echo EXIT=$?")
		seen := map[int]bool{}
		sc := tm.await("the job to end", 3*time.Minute, func(sc string) bool {
			if n := barDone(sc); n >= 0 {
				seen[n] = true
			}
			return exitRe.MatchString(sc)
		})
		require.Equal(t, "0", exitRe.FindStringSubmatch(sc)[1], sc)
		require.Contains(t, sc, "succeeded: 10000 rows, 10000 processed, 0 failed", sc)
		require.Equal(t, 10_000, barDone(sc), "the finished bar shows every row:\n%s", sc)
		var mid []int
		for n := range seen {
			if n > 0 && n < 10_000 {
				mid = append(mid, n)
			}
		}
		require.NotEmpty(t, mid, "the bar was seen between 0 and 10000 (seen %v):\n%s", seen, sc)
		t.Logf("counts seen on the bar: %d distinct, e.g. %v; the screen:\n%s", len(seen), mid[:min(len(mid), 5)], sc)
		tm.typeLine("clear")
		tm.await("a clear screen", 10*time.Second, func(sc string) bool { return !exitRe.MatchString(sc) })
	})

	t.Run("Ctrl-C asks, and y cancels the job", func(t *testing.T) {
		tm.typeLine(predq + " jobs submit " + big + " --wait; echo EXIT=$?")
		sc := tm.await("the bar to move", 3*time.Minute, func(sc string) bool { return barDone(sc) > 0 })
		m := uuidRe.FindStringSubmatch(sc)
		require.NotNil(t, m, "the job id on the screen:\n%s", sc)
		id := m[1]
		require.Equal(t, "running", s.job(id).Status)
		tm.run("send-keys", "-t", "cli", "C-c")
		tm.await("the cancel prompt", 30*time.Second, func(sc string) bool { return strings.Contains(sc, "Cancel job "+id+"? [y/N]") })
		tm.typeLine("y")
		sc = tm.await("predq to exit", 60*time.Second, exitRe.MatchString)
		require.Equal(t, "130", exitRe.FindStringSubmatch(sc)[1], sc)
		require.Contains(t, sc, "job "+id+" cancelled", sc)
		j := s.job(id)
		require.Equal(t, "cancelled", j.Status)
		require.Less(t, j.Processed, 100_000)
		t.Logf("the screen after Ctrl-C and y:\n%s", sc)
	})
}
