package migrations_test

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/migrations"
)

// partitioningDB creates a database with no tables and returns a pool on it; it is dropped at
// the end of the test.
func partitioningDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := pgtest.AdminURL(t)
	name := "predq_partitioning_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, err)
	pool, err := postgres.Open(ctx, postgres.WithDatabase(admin, name), 4)
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		if conn, err := pgx.Connect(context.Background(), admin); err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(context.Background())
		}
	})
	return pool
}

// migrationsBefore returns the migrations older than version.
func migrationsBefore(t *testing.T, version int) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		require.NoError(t, err)
		if v < version {
			b, err := fs.ReadFile(migrations.FS, e.Name())
			require.NoError(t, err)
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}

// fingerprint is the row count and a hash of every row of table, in key order.
func fingerprint(t *testing.T, pool *pgxpool.Pool, table, key string) (int64, string) {
	t.Helper()
	var n int64
	var sum string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*), coalesce(md5(string_agg(t::text, E'\n' ORDER BY `+key+`)), '')
		FROM `+table+` t`).Scan(&n, &sum))
	return n, sum
}

// fillOldShape writes predictions and job results as the tables before 00021 held them: rows
// over 12 days of the past and today, plus rows whose keys are not UUIDv7 (they go to the
// default partition).
func fillOldShape(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	// A UUIDv7 of time at (its Unix milliseconds, version 7, variant 10, bits of seed).
	exec(`CREATE FUNCTION pg_temp.v7(at timestamptz, seed text) RETURNS uuid LANGUAGE sql AS $$
		SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' || substr(md5(seed), 1, 3)
			|| '8' || substr(md5(seed), 4, 15))::uuid $$`)
	exec(`INSERT INTO predictions (id, request_id, input_features, prediction, confidence, prediction_class, model_version,
			preprocessing, confidence_threshold, user_id, latency_ms, created_at)
		SELECT pg_temp.v7(at, i::text), 'r' || i, ARRAY[i, 0.5]::float8[], 0.25, 0.75, 'negative', 'v1.0.0', 'standard', 0.5,
			'k' || (i % 3), 1.5, at
		FROM generate_series(1, 6000) AS i, LATERAL (SELECT now() - (i % 13) * interval '1 day' - (i % 7) * interval '1 hour' AS at) AS x`)
	exec(`INSERT INTO predictions (id, request_id, input_features, prediction, confidence, prediction_class, model_version,
			preprocessing, confidence_threshold, latency_ms)
		SELECT gen_random_uuid(), 'v4-' || i, '{1}', 0.5, 0.5, 'negative', 'v1.0.0', 'standard', 0.5, 1 FROM generate_series(1, 20) AS i`)
	exec(`INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold, total, processed,
			chunk_size, input_format, deadline_at, created_at, finished_at)
		SELECT CASE WHEN j % 5 = 0 THEN gen_random_uuid() ELSE pg_temp.v7(now() - j * interval '1 day', 'job' || j) END,
			'k', 'k', 'succeeded', 'v1.0.0', 'standard', 0.5, 200, 200, 100, 'ndjson', now(), now() - j * interval '1 day', now()
		FROM generate_series(0, 9) AS j`)
	exec(`INSERT INTO job_results (job_id, item_index, prediction, confidence, low_confidence, error)
		SELECT j.id, i, CASE WHEN i % 50 = 0 THEN NULL ELSE i / 200.0 END, 0.9, i % 7 = 0, CASE WHEN i % 50 = 0 THEN 'bad row' END
		FROM jobs j, generate_series(0, 199) AS i`)
}

// Migration 00021 moves predictions and job_results into day-partitioned tables without
// losing or changing a row, and its Down moves them back the same way.
func TestPartitioningMigrationKeepsEveryRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := partitioningDB(t)
	require.NoError(t, postgres.Migrate(ctx, pool, migrationsBefore(t, 21), nil))
	fillOldShape(t, pool)
	predN, predSum := fingerprint(t, pool, "predictions", "id")
	resN, resSum := fingerprint(t, pool, "job_results", "job_id, item_index")
	require.EqualValues(t, 6020, predN)
	require.EqualValues(t, 2000, resN)

	require.NoError(t, postgres.Migrate(ctx, pool, migrations.FS, nil))
	n, sum := fingerprint(t, pool, "predictions", "id")
	require.Equal(t, predN, n, "no prediction lost")
	require.Equal(t, predSum, sum, "every prediction as it was")
	n, sum = fingerprint(t, pool, "job_results", "job_id, item_index")
	require.Equal(t, resN, n, "no result lost")
	require.Equal(t, resSum, sum, "every result as it was")

	for _, table := range []string{"predictions", "job_results"} {
		var kind string
		require.NoError(t, pool.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE oid = $1::regclass`, table).Scan(&kind))
		require.Equal(t, "p", kind, "%s is partitioned", table)
		parts, err := postgres.Partitions(ctx, pool, table)
		require.NoError(t, err)
		today := time.Now().UTC().Truncate(24 * time.Hour)
		days := map[time.Time]bool{}
		for _, p := range parts {
			days[p.Day] = true
		}
		for i := 0; i <= 7; i++ {
			require.True(t, days[today.AddDate(0, 0, i)], "%s has the partition of today+%d", table, i)
		}
		if table == "predictions" {
			for i := 1; i <= 12; i++ {
				require.True(t, days[today.AddDate(0, 0, -i)], "%s has the partition of today-%d (it had rows)", table, i)
			}
		}
		// Every v7 row is in its day's partition, the others in the default one.
		var misplaced int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` t JOIN pg_class c ON c.oid = t.tableoid
			WHERE c.relname <> $1 || '_p' || to_char(to_timestamp(('x' || substr(replace(t.`+postgres.PartitionedTables[table]+`::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0) AT TIME ZONE 'UTC', 'YYYYMMDD')
			AND c.relname <> $1 || '_default'`, table).Scan(&misplaced))
		require.Zero(t, misplaced, "%s: rows outside their day's partition", table)
	}
	var inDefault int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM predictions_default`).Scan(&inDefault))
	require.Equal(t, 20, inDefault, "the UUIDv4 rows are in the default partition")

	// The keys still deduplicate: a replayed row is refused, ON CONFLICT skips it.
	_, err := pool.Exec(ctx, `INSERT INTO predictions SELECT * FROM predictions LIMIT 1`)
	require.True(t, postgres.IsCode(err, postgres.CodeUniqueViolation), "a second row with the same id: %v", err)
	tag, err := pool.Exec(ctx, `INSERT INTO job_results SELECT * FROM job_results LIMIT 10 ON CONFLICT DO NOTHING`)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
	// The foreign key to jobs still cascades.
	tag, err = pool.Exec(ctx, `DELETE FROM jobs WHERE id = (SELECT job_id FROM job_results LIMIT 1)`)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	n, _ = fingerprint(t, pool, "job_results", "job_id, item_index")
	require.Equal(t, resN-200, n, "the job's results went with it")
	resN, resSum = fingerprint(t, pool, "job_results", "job_id, item_index")

	rs, err := pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'predictions' ORDER BY 1`)
	require.NoError(t, err)
	indexes, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"predictions_created_at_idx", "predictions_pkey", "predictions_user_created_idx", "predictions_user_request_idx"}, indexes)

	// Down: plain tables again, every row as it was.
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.DownTo(ctx, 20)
	require.NoError(t, err)
	for _, table := range []string{"predictions", "job_results"} {
		var kind string
		require.NoError(t, pool.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE oid = $1::regclass`, table).Scan(&kind))
		require.Equal(t, "r", kind, "%s is a plain table again", table)
	}
	n, sum = fingerprint(t, pool, "predictions", "id")
	require.Equal(t, predN, n)
	require.Equal(t, predSum, sum)
	n, sum = fingerprint(t, pool, "job_results", "job_id, item_index")
	require.Equal(t, resN, n)
	require.Equal(t, resSum, sum)
}
