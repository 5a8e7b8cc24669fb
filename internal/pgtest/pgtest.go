// Package pgtest gives each test its own migrated Postgres database, created from a template
// database so that it costs one CREATE DATABASE, and dropped when the test ends.
//
// The server is the one at TEST_DATABASE_URL, else DATABASE_URL, else 127.0.0.1:5432 (user
// postgres); when none answers, a throwaway server is started from the installed binaries
// (internal/localsvc) for the test process.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/migrations"
)

const defaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	adminOnce sync.Once
	adminURL  string
	adminErr  error
	tmplOnce  sync.Once
	tmplName  string
	tmplErr   error
)

// New returns a pool on a fresh, migrated database of its own. The database is dropped at
// the end of the test.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := NewURL(t)
	pool, err := postgres.Open(context.Background(), u, 10)
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewURL creates a fresh, migrated database and returns its URL, for tests that start a
// whole program. The database is dropped at the end of the test.
func NewURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := server(ctx)
	if err != nil {
		t.Fatalf("pgtest: no Postgres: %v", err)
	}
	tmpl, err := template(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: template: %v", err)
	}
	name := "predq_test_" + randomHex(6)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	// Two CREATE DATABASE from one template at the same instant can fail with "source
	// database is being accessed by other users": retry briefly.
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{tmpl}.Sanitize()))
		if err == nil || !postgres.IsCode(err, "55006") || attempt == 50 {
			break
		}
		time.Sleep(time.Duration(20+attempt*10) * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return postgres.WithDatabase(admin, name)
}

// AdminURL returns the URL of the server's postgres database, starting a throwaway server
// when no configured one answers.
func AdminURL(t testing.TB) string {
	t.Helper()
	u, err := server(context.Background())
	if err != nil {
		t.Fatalf("pgtest: no Postgres: %v", err)
	}
	return u
}

func server(ctx context.Context) (string, error) {
	adminOnce.Do(func() {
		candidates := []string{os.Getenv("TEST_DATABASE_URL"), os.Getenv("DATABASE_URL"), defaultURL}
		for _, c := range candidates {
			if c == "" {
				continue
			}
			c = postgres.WithDatabase(c, "postgres")
			if ping(ctx, c) == nil {
				adminURL = c
				return
			}
		}
		srv, err := localsvc.StartPostgres(ctx)
		if err != nil {
			adminErr = fmt.Errorf("no configured server answers and none could be started: %w", err)
			return
		}
		// The server lives as long as this test process (localsvc's guard stops it).
		adminURL = srv.URL
		for i := 0; i < 100 && ping(ctx, adminURL) != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return adminURL, adminErr
}

func ping(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// template makes sure a migrated template database for the current migrations exists. Its
// name carries a hash of the migration files, so a changed migration gets a new template.
// Creation is serialised across test processes with an advisory lock.
func template(ctx context.Context, admin string) (string, error) {
	tmplOnce.Do(func() {
		h, err := migrationsHash()
		if err != nil {
			tmplErr = err
			return
		}
		tmplName = "predq_tmpl_" + h[:12]
		tmplErr = ensureTemplate(ctx, admin, tmplName)
	})
	return tmplName, tmplErr
}

func ensureTemplate(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7162534)"); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(7162534)") //nolint:errcheck
	var ready bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&ready)
	if err == nil && ready {
		return nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	// A half-made template from a crashed run is dropped and made again.
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s", pgx.Identifier{name}.Sanitize())); err != nil {
		return err
	}
	pool, err := postgres.Open(ctx, postgres.WithDatabase(admin, name), 2)
	if err != nil {
		return err
	}
	err = postgres.Migrate(ctx, pool, migrations.FS, nil)
	pool.Close()
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s WITH is_template = true", pgx.Identifier{name}.Sanitize()))
	return err
}

func migrationsHash() (string, error) {
	entries, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return "", err
	}
	sort.Strings(entries)
	h := sha256.New()
	for _, e := range entries {
		b, err := fs.ReadFile(migrations.FS, e)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", e, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Unreachable returns a pool on a loopback port where no Postgres listens (connections are
// refused), closed at the end of the test: for the tests of what happens when Postgres is down.
func Unreachable(t testing.TB) *pgxpool.Pool {
	t.Helper()
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pool, err := postgres.Open(context.Background(), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=1", port), 2)
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
