package maintenance

import (
	"context"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/migrations"
)

// TestRetentionFigures measures retention of PREDQ_RETENTION_FIGURES old predictions (e.g.
// 1000000) spread over 10 days, with 10,000 young ones: once on the plain table of before
// migration 00021 (the rows are deleted, 5,000 per statement) and once on the day-partitioned
// table (the 10 days are dropped). It reports the time and the WAL written
// (pg_current_wal_lsn before and after) of each, on a throwaway server of its own (so that no
// other database's WAL counts) with full_page_writes on, as a real server has it. It checks
// what was deleted; it asserts no time. Without the variable it measures 20,000 rows, so that
// the path runs in every test run.
//
//	PREDQ_RETENTION_FIGURES=1000000 go test -run TestRetentionFigures -v -timeout 30m ./internal/maintenance
func TestRetentionFigures(t *testing.T) {
	rows := 20000
	if v := os.Getenv("PREDQ_RETENTION_FIGURES"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "PREDQ_RETENTION_FIGURES")
		rows = n
	}
	ctx := context.Background()
	srv, err := localsvc.StartPostgresWith(ctx, "full_page_writes=on", "max_wal_size=4GB", "checkpoint_timeout=1h")
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	admin, err := pgxpool.New(ctx, srv.URL)
	require.NoError(t, err)
	t.Cleanup(admin.Close)

	for _, tc := range []struct {
		name string
		fsys fs.FS
	}{
		{"row delete (plain table)", before21(t)},
		{"partition drop", migrations.FS},
	} {
		db := "figures_" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
		// The server accepts connections before it is ready: poll until it is.
		deadline := time.Now().Add(time.Minute)
		for {
			_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
			if err == nil || !postgres.IsCode(err, "57P03") || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		require.NoError(t, err)
		pool, err := postgres.Open(ctx, postgres.WithDatabase(srv.URL, db), 4)
		require.NoError(t, err)
		require.NoError(t, postgres.Migrate(ctx, pool, tc.fsys, nil))
		now := time.Now().UTC()
		if tc.fsys == migrations.FS {
			_, err := EnsurePartitions(ctx, pool, now.AddDate(0, 0, -45), 46)
			require.NoError(t, err)
		} else {
			// The store deletes the labels of the rows it deletes (00022): empty plain
			// tables of the keys it reads stand in for them on the schema before 00021.
			_, err := pool.Exec(ctx, `CREATE TABLE prediction_labels (prediction_id uuid PRIMARY KEY);
				CREATE TABLE prediction_label_history (prediction_id uuid)`)
			require.NoError(t, err)
		}
		exec := func(sql string, args ...any) {
			t.Helper()
			_, err := pool.Exec(ctx, sql, args...)
			require.NoError(t, err)
		}
		exec(`CREATE FUNCTION pg_temp.v7(at timestamptz, seed bigint) RETURNS uuid LANGUAGE sql AS $$
			SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' || substr(md5(seed::text), 1, 3)
				|| '8' || substr(md5(seed::text), 4, 15))::uuid $$`)
		fill := func(n int, from time.Time, span time.Duration) {
			exec(`INSERT INTO predictions (id, request_id, input_features, prediction, confidence, prediction_class, model_version,
					preprocessing, confidence_threshold, user_id, latency_ms, created_at)
				SELECT pg_temp.v7(at, i), 'req-' || i, ARRAY[i % 97, 0.5, 0.25, 0.125]::float8[], 0.25, 0.75, 'negative', 'v1.0.0',
					'standard', 0.5, 'k' || (i % 10), 1.5, at
				FROM generate_series(1, $1::int) AS i, LATERAL (SELECT $2::timestamptz + (i::float8 / $1) * $3::interval AS at) AS x`,
				n, from, span.String())
		}
		// The old rows: 10 whole days, 40 to 31 days back (a 30-day retention).
		oldFrom := now.AddDate(0, 0, -40).Truncate(24 * time.Hour)
		fill(rows, oldFrom, 10*24*time.Hour-time.Minute)
		fill(10000, now.AddDate(0, 0, -5), 4*24*time.Hour)
		exec(`VACUUM ANALYZE predictions`)
		exec(`CHECKPOINT`)

		var lsn0 string
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn0))
		start := time.Now()
		n, err := prediction.NewStore(pool).DeleteOlderThan(ctx, now.Add(-720*time.Hour))
		took := time.Since(start)
		require.NoError(t, err)
		var wal int64
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, lsn0).Scan(&wal))
		require.EqualValues(t, rows, n, "%s: every old row", tc.name)
		var left int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM predictions`).Scan(&left))
		require.Equal(t, 10000, left, "%s: the young rows stay", tc.name)
		t.Logf("retention of %d old predictions, %s: %s, %.1f MB of WAL", rows, tc.name, took.Round(time.Millisecond), float64(wal)/1e6)
		pool.Close()
	}
}

// before21 returns the migrations before 00021 (the plain tables).
func before21(t *testing.T) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		require.NoError(t, err)
		if v < 21 {
			b, err := fs.ReadFile(migrations.FS, e.Name())
			require.NoError(t, err)
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}
