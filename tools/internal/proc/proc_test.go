package proc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMachineCPUIsRead(t *testing.T) {
	t.Parallel()
	busy, idle := MachineCPU()
	require.Positive(t, busy+idle, "/proc/stat")

	// user nice system idle iowait irq softirq steal guest guest_nice: guest time is in user.
	busy, idle = ParseCPULine("cpu  100 2 30 400 5 6 7 8 9 10")
	require.Equal(t, (100+2+30+6+7+8)*ClockTick, busy)
	require.Equal(t, (400+5)*ClockTick, idle)
	busy, idle = ParseCPULine("cpu0 1 2 3 4 5 6 7 8")
	require.Zero(t, busy+idle, "a core's line, not the machine's")
}

// TestStartCapturesOutputAndStopEnds: both streams are captured, and Stop ends the process
// with SIGTERM.
func TestStartCapturesOutputAndStopEnds(t *testing.T) {
	t.Parallel()
	p, err := Start("sh", exec.Command("sh", "-c", `echo started; echo on-stderr >&2; exec sleep 60`), 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(p.Log(), "started\non-stderr") }, 10*time.Second, 10*time.Millisecond)
	require.False(t, p.Exited())
	require.Positive(t, p.PID())
	hwm, rss, err := PeakRSS(p.PID())
	require.NoError(t, err)
	require.Positive(t, hwm)
	require.LessOrEqual(t, rss, hwm)
	p.Stop()
	require.True(t, p.Exited())
	require.Equal(t, "signal: terminated", p.Cmd.ProcessState.String())
	p.Stop() // an ended process is left alone
}

func TestLogKeepsItsEnd(t *testing.T) {
	t.Parallel()
	l := &logBuffer{keep: 100}
	for i := range 50 {
		_, _ = l.Write([]byte(strings.Repeat(string(rune('a'+i%26)), 10)))
	}
	s := l.String()
	require.LessOrEqual(t, len(s), 110)
	require.True(t, strings.HasSuffix(s, strings.Repeat("x", 10)), s) // the 50th write: 'a'+49%26
}

// TestWaitHTTP: a URL that answers 200 is waited for; a process that ends first is reported
// as exited, with its output.
func TestWaitHTTP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	p, err := Start("sleeper", exec.Command("sleep", "60"), 0)
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	require.NoError(t, p.WaitHTTP(context.Background(), "http://"+ln.Addr().String()+"/", 10*time.Second))

	q, err := Start("quitter", exec.Command("sh", "-c", "echo bye; exit 3"), 0)
	require.NoError(t, err)
	err = q.WaitHTTP(context.Background(), "http://127.0.0.1:1/", 10*time.Second)
	require.ErrorIs(t, err, ErrExited)
	require.ErrorContains(t, err, "bye")

	err = p.WaitHTTP(context.Background(), "http://127.0.0.1:1/", 100*time.Millisecond)
	require.ErrorContains(t, err, "did not answer")
	require.False(t, errors.Is(err, ErrExited))
}

func TestCPUOfThisProcess(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(5 * time.Second)
	for CPU(os.Getpid()) == 0 && time.Now().Before(deadline) {
		for i := range 1_000_000 {
			_ = i * i
		}
	}
	require.Positive(t, CPU(os.Getpid()))
	require.Zero(t, CPU(0))
}
