package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/tools/internal/proc"
)

// defaultAdminURL is the Postgres tried when DATABASE_URL is unset.
const defaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// pinning says where the processes run. With taskset available, the HTTP servers under
// test (the ceiling server and the api) run on core 0 and every load generator on core 1;
// Redis, Postgres and the worker are left to the scheduler.
type pinning struct {
	On     bool
	Server string // taskset CPU list of the servers under test
	Load   string // taskset CPU list of the load generators
}

// detectPinning checks that taskset works and that cores 0 and 1 exist.
func detectPinning(disabled bool) pinning {
	if disabled {
		return pinning{}
	}
	if exec.Command("taskset", "-c", "0", "true").Run() != nil || exec.Command("taskset", "-c", "1", "true").Run() != nil {
		return pinning{}
	}
	return pinning{On: true, Server: "0", Load: "1"}
}

// command returns a command running name with args, on cpus when pinning is on and cpus is
// not empty.
func (p pinning) command(ctx context.Context, cpus, name string, args ...string) *exec.Cmd {
	if p.On && cpus != "" {
		return proc.CommandContext(ctx, "taskset", append([]string{"-c", cpus, name}, args...)...)
	}
	return proc.CommandContext(ctx, name, args...)
}

// describe says in words what pinning was used.
func (p pinning) describe() string {
	if !p.On {
		return "no pinning (taskset unavailable or -no-pin): servers and load generator share every core"
	}
	return fmt.Sprintf("pinned with taskset: api and ceiling server on core %s, load generators on core %s; Redis, Postgres and the worker unpinned", p.Server, p.Load)
}

// tail is the end of a process's output, for an error.
func tail(p *proc.Proc) string {
	s := p.Log()
	if len(s) > 2048 {
		s = "…" + p.Tail(2048)
	}
	return strings.TrimSpace(s)
}

// withDatabase returns the Postgres URL u naming database db instead of its own.
func withDatabase(u, db string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	parsed.Path = "/" + db
	return parsed.String()
}

// buildBinaries builds the api and worker into dir, like `make build`.
func buildBinaries(ctx context.Context, root, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/worker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out.String())
	}
	return nil
}

// postgresServer returns the admin URL of the Postgres to use: DATABASE_URL's server, else
// 127.0.0.1:5432, else a throwaway server started for this run (stop is then not nil).
func postgresServer(ctx context.Context, getenv func(string) string) (admin string, stop func(), err error) {
	for _, c := range []string{getenv("DATABASE_URL"), defaultAdminURL} {
		if c == "" {
			continue
		}
		c = withDatabase(c, "postgres")
		if pingPostgres(ctx, c) == nil {
			return c, nil, nil
		}
	}
	srv, err := localsvc.StartPostgres(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("no Postgres answers at DATABASE_URL or 127.0.0.1:5432, and none could be started: %w", err)
	}
	for i := 0; i < 100 && pingPostgres(ctx, srv.URL) != nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return srv.URL, func() { _ = srv.Stop() }, nil
}

func pingPostgres(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// createDatabase creates a database named predq_bench_<random> and returns its name.
func createDatabase(ctx context.Context, admin string) (string, error) {
	name := "predq_bench_" + randomHex(6)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// dropDatabase drops the database, disconnecting its sessions.
func dropDatabase(admin, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// minimalEnv is the environment of the started processes: only what a process needs from
// ours (so that a developer's DATABASE_URL, OTEL_* or .env does not leak in), plus vars.
func minimalEnv(vars map[string]string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}
