// Command dev brings the whole pipeline up on one machine (`make run`): it uses the Postgres
// and Redis at DATABASE_URL / REDIS_URL when they answer, else starts throwaway servers from
// the installed binaries; applies the migrations; starts api, worker and scheduler (built next
// to it in bin/); prints the URLs and a working API key. Ctrl-C stops everything.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/redisdb"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	getenv, err := config.WithDotEnv(getenv, ".env")
	if err != nil {
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	env := map[string]string{}
	for _, v := range config.Vars {
		if val := getenv(v.Name); val != "" {
			env[v.Name] = val
		}
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, "dev: "+format+"\n", a...) }

	// Postgres: the configured server when it answers, else a throwaway one.
	if err := pingPostgres(ctx, cfg.DatabaseURL); err != nil {
		say("no Postgres at %s (%v): starting a throwaway server", config.RedactURL(cfg.DatabaseURL), shortErr(err))
		srv, err := localsvc.StartPostgres(ctx)
		if err != nil {
			return err
		}
		defer stopService(srv, say)
		env["DATABASE_URL"] = postgres.WithDatabase(srv.URL, "predq")
	} else {
		env["DATABASE_URL"] = cfg.DatabaseURL
	}
	// Redis: likewise.
	if err := pingRedis(ctx, cfg.RedisURL); err != nil {
		say("no Redis at %s (%v): starting a throwaway server", config.RedactURL(cfg.RedisURL), shortErr(err))
		srv, err := localsvc.StartRedis(ctx)
		if err != nil {
			return err
		}
		defer stopService(srv, say)
		env["REDIS_URL"] = srv.URL
		if getenv("CACHE_REDIS_URL") == "" {
			delete(env, "CACHE_REDIS_URL")
		}
	}
	apiKey := ""
	if env["API_KEYS"] == "" {
		apiKey = "dev_" + randomHex(16)
		env["API_KEYS"] = "dev:" + apiKey
	} else {
		first := strings.Split(env["API_KEYS"], ",")[0]
		if _, k, ok := strings.Cut(first, ":"); ok {
			apiKey = k
		} else {
			apiKey = first
		}
	}
	if env["SECRET_KEY"] == "" {
		env["SECRET_KEY"] = randomHex(32)
	}
	if env["WEBHOOK_SECRET"] == "" {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		env["WEBHOOK_SECRET"] = "whsec_" + base64.StdEncoding.EncodeToString(b)
	}
	monUser, monPassword := devMonitoringCredentials(env)
	if env["WEBHOOK_ALLOW_PRIVATE"] == "" {
		env["WEBHOOK_ALLOW_PRIVATE"] = "true" // local receivers are the point of local development
	}

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Dir(exe)
	environ := os.Environ()
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}

	say("applying migrations")
	migrate := exec.CommandContext(ctx, filepath.Join(bin, "api"), "migrate")
	migrate.Env, migrate.Stdout, migrate.Stderr = environ, stdout, stderr
	if err := migrate.Run(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	var procs []*exec.Cmd
	var wg sync.WaitGroup
	exited := make(chan string, 3)
	for _, name := range []string{"api", "worker", "scheduler"} {
		cmd := exec.Command(filepath.Join(bin, name))
		cmd.Env, cmd.Stdout, cmd.Stderr = environ, stdout, stderr
		if err := cmd.Start(); err != nil {
			stopAll(procs, &wg)
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			exited <- fmt.Sprintf("%s exited: %v", name, err)
		}()
	}
	base := "http://127.0.0.1:" + fmt.Sprint(cfg.Port)
	if err := waitReady(ctx, base+"/health/ready", exited); err != nil {
		stopAll(procs, &wg)
		return err
	}
	say(`up. Ctrl-C stops everything.

  API          %[1]s/api/v1/predict        (Authorization: Bearer %[2]s)
  API docs     %[1]s/api/docs
  gRPC         127.0.0.1:%[9]d   (grpcurl -plaintext -H 'authorization: Bearer %[2]s' 127.0.0.1:%[9]d list)
  Readiness    %[1]s/health/ready
  Metrics      %[1]s/metrics   worker :%[3]d/metrics   scheduler :%[4]d/metrics
  Dashboard    %[1]s/monitoring/        (user %[7]s, password %[8]s)
  Database     %[5]s
  Redis        %[6]s

  curl -s -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' \
       -d "{\"features\": [$(head -1 data/sonar.csv | cut -d, -f1-60)]}" %[1]s/api/v1/predict`,
		base, apiKey, cfg.WorkerMetricsPort, cfg.SchedulerMetricsPort, config.RedactURL(env["DATABASE_URL"]), config.RedactURL(firstNonEmpty(env["REDIS_URL"], cfg.RedisURL)),
		monUser, monPassword, cfg.GRPCPort)

	select {
	case <-ctx.Done():
		say("stopping")
	case msg := <-exited:
		say("%s: stopping the others", msg)
	}
	stopAll(procs, &wg)
	return nil
}

func stopAll(procs []*exec.Cmd, wg *sync.WaitGroup) {
	for _, p := range procs {
		if p.Process != nil {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		for _, p := range procs {
			_ = p.Process.Kill()
		}
	}
}

func waitReady(ctx context.Context, u string, exited <-chan string) error {
	deadline := time.After(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-exited:
			return errors.New(msg)
		case <-deadline:
			return fmt.Errorf("%s not ready after 60s", u)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pingPostgres checks that the server of url answers (its database may not exist yet: the
// migration creates it).
func pingPostgres(ctx context.Context, raw string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, postgres.WithDatabase(raw, "postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func pingRedis(ctx context.Context, raw string) error {
	c, err := redisdb.Open(raw, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// devMonitoringCredentials fills MONITORING_USER (admin) and MONITORING_PASSWORD (random)
// in env where they are unset, as for the API key, so that the dashboard the dev stack prints
// is mounted (the api mounts it only with both), and returns them to be printed.
func devMonitoringCredentials(env map[string]string) (user, password string) {
	if env["MONITORING_USER"] == "" {
		env["MONITORING_USER"] = "admin"
	}
	if env["MONITORING_PASSWORD"] == "" {
		env["MONITORING_PASSWORD"] = randomHex(12)
	}
	return env["MONITORING_USER"], env["MONITORING_PASSWORD"]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// stopService stops a throwaway server that the dev stack started, saying so when it fails.
func stopService(srv *localsvc.Server, say func(string, ...any)) {
	if err := srv.Stop(); err != nil {
		say("stopping a throwaway server: %v", err)
	}
}
