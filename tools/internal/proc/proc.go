// Package proc supervises the binaries that the bench and the e2e tests run as black boxes:
// start one with its environment and its output captured, wait until its health URL
// answers, stop it with SIGTERM and then SIGKILL, and read its CPU time and memory from
// /proc.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopTimeout is how long Stop waits after SIGTERM before it kills the process: the
// binaries' own shutdown is bounded well below it.
const StopTimeout = 30 * time.Second

// Proc is a started process.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
}

// Start starts cmd with its stdout and stderr kept in memory. keep bounds the output kept
// (its last keep bytes, roughly); 0 keeps all of it.
func Start(name string, cmd *exec.Cmd, keep int) (*Proc, error) {
	p := &Proc{Name: name, Cmd: cmd, log: &logBuffer{keep: keep}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// CommandContext is exec.CommandContext with the context's end stopping the process as Stop
// does (SIGTERM, then SIGKILL after StopTimeout) instead of killing it at once.
func CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = StopTimeout
	return cmd
}

// PID is the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log returns the output kept so far.
func (p *Proc) Log() string { return p.log.String() }

// Tail returns the last n bytes of the output kept.
func (p *Proc) Tail(n int) string {
	s := p.log.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Stop sends SIGTERM and waits for the process to end, killing it after StopTimeout. A nil
// or ended process is left alone.
func (p *Proc) Stop() {
	if p == nil || p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// ErrExited is returned by WaitHTTP when the process ended before it answered.
var ErrExited = errors.New("process exited")

// WaitHTTP polls GET url every 25 ms until it answers 200, the process ends (ErrExited),
// the timeout passes or ctx ends.
func (p *Proc) WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("%s: %w (%s): %s", p.Name, ErrExited, p.Cmd.ProcessState, strings.TrimSpace(p.Tail(2048)))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s within %s", p.Name, url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// logBuffer is a bytes.Buffer safe for concurrent writes, keeping about the last keep bytes
// (all when keep is 0).
type logBuffer struct {
	mu   sync.Mutex
	keep int
	b    bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keep > 0 && l.b.Len() > l.keep {
		kept := append([]byte(nil), l.b.Bytes()[l.b.Len()-l.keep/2:]...)
		l.b.Reset()
		l.b.Write(kept)
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// PeakRSS returns a process's VmHWM (peak resident set size) and VmRSS, in bytes.
func PeakRSS(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	if hwm == 0 {
		return 0, 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return hwm, rss, nil
}
