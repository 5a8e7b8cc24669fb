package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/migrations"
)

// Replicated is a throwaway primary and a streaming replica of it (pg_basebackup -R), both
// on loopback, with a migrated database "predq".
type Replicated struct {
	PrimaryURL string // the database predq on the primary
	ReplicaURL string // the same database on the replica (read-only, hot standby)
	Primary    *localsvc.Server
	Replica    *localsvc.Server
}

// NewReplicated starts a primary (wal_level=replica, from the installed binaries, not the
// shared server), migrates a database on it, and starts a replica that streams from it. Both
// stop at the end of the test. A test may pause the replica's replay to make it lag
// (SELECT pg_wal_replay_pause() on ReplicaURL).
func NewReplicated(t testing.TB) Replicated {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	primary, err := localsvc.StartPostgresWith(ctx, "wal_level=replica", "max_wal_senders=4", "hot_standby=on")
	if err != nil {
		t.Fatalf("pgtest: primary: %v", err)
	}
	t.Cleanup(func() { _ = primary.Stop() })
	admin := waitReady(ctx, t, primary.URL)
	if _, err := admin.Exec(ctx, "CREATE DATABASE predq"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	_ = admin.Close(ctx)
	r := Replicated{PrimaryURL: postgres.WithDatabase(primary.URL, "predq"), Primary: primary}
	pool, err := postgres.Open(ctx, r.PrimaryURL, 2)
	if err != nil {
		t.Fatalf("pgtest: open primary: %v", err)
	}
	err = postgres.Migrate(ctx, pool, migrations.FS, nil)
	pool.Close()
	if err != nil {
		t.Fatalf("pgtest: migrate primary: %v", err)
	}
	replica, err := localsvc.StartPostgresReplica(ctx, primary)
	if err != nil {
		t.Fatalf("pgtest: replica: %v", err)
	}
	t.Cleanup(func() { _ = replica.Stop() }) // runs before the primary's Stop
	r.Replica, r.ReplicaURL = replica, postgres.WithDatabase(replica.URL, "predq")
	conn := waitReady(ctx, t, r.ReplicaURL)
	defer conn.Close(ctx)
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil || !standby {
		t.Fatalf("pgtest: the replica is not a standby: %v", err)
	}
	return r
}

// waitReady connects to u once the server accepts sessions (it listens before it is ready:
// "the database system is starting up").
func waitReady(ctx context.Context, t testing.TB, u string) *pgx.Conn {
	t.Helper()
	for {
		conn, err := pgx.Connect(ctx, u)
		if err == nil {
			return conn
		}
		if !postgres.IsCode(err, "57P03") || ctx.Err() != nil {
			t.Fatalf("pgtest: connect %s: %v", u, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
