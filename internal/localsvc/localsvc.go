// Package localsvc starts throwaway PostgreSQL and Redis servers from the binaries installed
// on the machine, for tests and for `make run` when no configured server answers.
//
// A server started here lives as long as the process that started it, however that process
// ends: it runs under a small shell guard that reads the parent's end of a pipe and stops the
// server (and removes its data directory) when the pipe closes.
package localsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Server is a running throwaway server.
type Server struct {
	URL  string // connection URL
	Port int
	Dir  string // data directory, removed when the server stops

	cmd   *exec.Cmd
	guard io.WriteCloser

	argv    []string // how the server was started, to start it again (Restart)
	logFile string
	halt    []string // stops the server and keeps its data (Halt); nil when it cannot
}

// Stop stops the server and removes its data directory. It waits for the guard to finish.
func (s *Server) Stop() error {
	if s == nil || s.guard == nil {
		return nil
	}
	_ = s.guard.Close()
	err := s.cmd.Wait()
	s.guard = nil
	return err
}

// Halt stops the server at once (a Postgres fast shutdown: sessions are cut) and keeps its
// data directory, so that Restart starts it again as it was: an outage, for tests.
func (s *Server) Halt() error {
	if s == nil || s.guard == nil || s.halt == nil {
		return errors.New("localsvc: nothing to halt")
	}
	if out, err := exec.Command(s.halt[0], s.halt[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("localsvc: halt: %w: %s", err, lastLines(out, 5))
	}
	// The server has exited; its guard leaves the directory in place.
	_, _ = io.WriteString(s.guard, "keep\n")
	_ = s.guard.Close()
	_ = s.cmd.Wait()
	s.guard = nil
	return nil
}

// Restart starts a halted server again on the same port and data directory, and waits until
// it accepts connections.
func (s *Server) Restart(ctx context.Context) error {
	if s == nil || s.guard != nil || s.argv == nil {
		return errors.New("localsvc: not halted")
	}
	cmd, guard, err := startGuarded(s.Dir, s.logFile, s.argv...)
	if err != nil {
		return err
	}
	s.cmd, s.guard = cmd, guard
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return waitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", s.Port))
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// guardScript runs the server in the background, waits for stdin to close (the parent ended or
// called Stop), then stops the server and removes the directory, unless the last line read
// was "keep" (Halt: the server was stopped, its data stays for Restart).
const guardScript = `
set -u
"$@" &
pid=$!
mode=
cleanup() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; [ "$mode" = keep ] || rm -rf "$GUARD_DIR"; }
trap cleanup EXIT
trap 'exit 0' TERM INT
while IFS= read -r line; do mode=$line; done
`

func startGuarded(dir string, logFile string, argv ...string) (*exec.Cmd, io.WriteCloser, error) {
	cmd := exec.Command("bash", append([]string{"-c", guardScript, "guard"}, argv...)...)
	cmd.Env = append(os.Environ(), "GUARD_DIR="+dir)
	log, err := os.Create(logFile)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	log.Close()
	return cmd, stdin, nil
}

// waitTCP waits until addr accepts connections or ctx ends.
func waitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartRedis starts redis-server on a free loopback port with nothing kept on disk.
func StartRedis(ctx context.Context) (*Server, error) {
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s, err := StartRedisOnPort(ctx, port)
		if err == nil || attempt == 2 {
			return s, err
		}
	}
}

// StartRedisOnPort starts redis-server on 127.0.0.1:port with nothing kept on disk: an
// empty Redis, also where one was stopped a moment ago (a restart that lost its data).
func StartRedisOnPort(ctx context.Context, port int) (*Server, error) {
	return startRedis(ctx, port, "")
}

// StartRedisConfigured starts redis-server on a free loopback port as StartRedis does, with
// extra arguments after the defaults (so that they win: "--replicaof", "--sentinel",
// "--cluster-enabled"). conf, when not empty, is written to redis.conf in the server's data
// directory and given as its config file: Sentinel needs one that it can rewrite.
func StartRedisConfigured(ctx context.Context, conf string, extra ...string) (*Server, error) {
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s, err := startRedis(ctx, port, conf, extra...)
		if err == nil || attempt == 2 {
			return s, err
		}
	}
}

func startRedis(ctx context.Context, port int, conf string, extra ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not installed: %w", err)
	}
	dir, err := os.MkdirTemp("", "predq-redis-")
	if err != nil {
		return nil, err
	}
	argv := []string{bin}
	if conf != "" {
		file := filepath.Join(dir, "redis.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		argv = append(argv, file)
	}
	argv = append(argv, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--maxmemory-policy", "noeviction", "--protected-mode", "yes")
	argv = append(argv, extra...)
	cmd, guard, err := startGuarded(dir, filepath.Join(dir, "redis.log"), argv...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), Port: port, Dir: dir, cmd: cmd, guard: guard}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = waitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", port))
	cancel()
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("redis-server did not start on port %d: %w", port, err)
	}
	return s, nil
}

// PostgresBinDir finds the directory holding initdb and postgres.
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("initdb not found on PATH nor in /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres initialises a cluster in a temporary directory and starts it on a free
// loopback port with trust authentication for the user postgres. Durability is traded for
// speed (fsync off): it is for tests and local development only.
func StartPostgres(ctx context.Context) (*Server, error) {
	return StartPostgresWith(ctx)
}

// StartPostgresWith is StartPostgres with more server settings ("name=value", each passed as
// -c after the defaults, which they override: "full_page_writes=on", "wal_level=replica").
func StartPostgresWith(ctx context.Context, settings ...string) (*Server, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "predq-pg-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--no-sync")
	if os.Geteuid() == 0 {
		// postgres refuses to run as root: hand the directory to the postgres user.
		if err := chownToPostgres(dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		initdb = exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(binDir, "initdb"),
			"-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
	}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, lastLines(out, 5))
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	argv := []string{filepath.Join(binDir, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300"}
	for _, kv := range settings {
		argv = append(argv, "-c", kv)
	}
	if os.Geteuid() == 0 {
		argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
	}
	logFile := filepath.Join(dir, "postgres.log")
	cmd, guard, err := startGuarded(dir, logFile, argv...)
	if err != nil {
		return nil, err
	}
	halt := []string{filepath.Join(binDir, "pg_ctl"), "stop", "-D", data, "-m", "fast", "-w"}
	if os.Geteuid() == 0 {
		halt = append([]string{"runuser", "-u", "postgres", "--"}, halt...)
	}
	s := &Server{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port, Dir: dir, cmd: cmd, guard: guard,
		argv: argv, logFile: logFile, halt: halt}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
		_ = s.Stop()
		return nil, fmt.Errorf("postgres did not start: %w: %s", err, lastLines(log, 5))
	}
	return s, nil
}

func chownToPostgres(dir string) error {
	out, err := exec.Command("id", "-u", "postgres").Output()
	if err != nil {
		return fmt.Errorf("running as root needs a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("id", "-g", "postgres").Output()
	if err != nil {
		return err
	}
	gid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return os.Chown(dir, uid, gid)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// StartPostgresReplica makes a streaming replica of primary (started by StartPostgresWith
// with wal_level=replica or logical): a pg_basebackup -R of it into a temporary directory,
// started as a hot standby on a free loopback port. Stop it before its primary.
func StartPostgresReplica(ctx context.Context, primary *Server) (*Server, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	// initdb on PATH may be a link into the release's directory, which has pg_basebackup.
	if real, err := filepath.EvalSymlinks(filepath.Join(binDir, "initdb")); err == nil {
		binDir = filepath.Dir(real)
	}
	dir, err := os.MkdirTemp("", "predq-pg-replica-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	asPostgres := func(argv ...string) []string {
		if os.Geteuid() == 0 {
			return append([]string{"runuser", "-u", "postgres", "--"}, argv...)
		}
		return argv
	}
	if os.Geteuid() == 0 {
		if err := chownToPostgres(dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	bb := asPostgres(filepath.Join(binDir, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres",
		"-D", data, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	if out, err := exec.CommandContext(ctx, bb[0], bb[1:]...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_basebackup: %w: %s", err, lastLines(out, 5))
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The settings of the primary's command line are not in the copy: give them again, and
	// the standby's own port and socket directory after them.
	argv := []string{filepath.Join(binDir, "postgres"), "-D", data}
	for i := 3; i+1 < len(primary.argv); i++ {
		if primary.argv[i] == "-c" && !strings.HasPrefix(primary.argv[i+1], "unix_socket_directories=") {
			argv = append(argv, "-c", primary.argv[i+1])
		}
	}
	argv = append(argv, "-p", strconv.Itoa(port), "-c", "unix_socket_directories="+dir, "-c", "hot_standby=on")
	argv = asPostgres(argv...)
	logFile := filepath.Join(dir, "postgres.log")
	cmd, guard, err := startGuarded(dir, logFile, argv...)
	if err != nil {
		return nil, err
	}
	s := &Server{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port, Dir: dir,
		cmd: cmd, guard: guard, argv: argv, logFile: logFile,
		halt: asPostgres(filepath.Join(binDir, "pg_ctl"), "stop", "-D", data, "-m", "fast", "-w")}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		log, _ := os.ReadFile(logFile)
		_ = s.Stop()
		return nil, fmt.Errorf("replica did not start: %w: %s", err, lastLines(log, 5))
	}
	return s, nil
}
