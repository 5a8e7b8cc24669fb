package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The tables that grow with traffic, predictions and job_results, are partitioned by range of
// a UUIDv7 key (migrations/00021_partitioning.sql): predictions on id, job_results on job_id.
// A UUIDv7 begins with its Unix time in milliseconds (48 bits, big-endian), and Postgres
// orders uuids bytewise, so a range of ids is a range of time: the partition of day D holds
// the keys from DayBound(D) to DayBound(D+1). The key is the primary key's (or leads it), so a
// unique key on the partitioned table includes the partition key, as Postgres requires, and
// the writes stay idempotent on it (ON CONFLICT (id) DO NOTHING) with no other column.
//
// Each table has one partition per UTC day, named <table>_pYYYYMMDD, and a default partition
// <table>_default for keys of no day partition (a key from the far past or future, a UUID that
// is not v7), so that no insert fails for want of a partition. EnsurePartitions creates the
// days ahead (the scheduler's maintenance:partitions); retention drops whole days
// (DropPartitionsBefore) and deletes the rest by rows.

// PartitionedTables are the tables partitioned by day, with their partition key.
var PartitionedTables = map[string]string{
	"predictions": "id", "job_results": "job_id",
	"prediction_labels": "prediction_id", "prediction_label_history": "prediction_id",
	"job_labels": "job_id", "job_label_history": "job_id",
}

// Companions are, for a table that retention drops by day partitions, the tables partitioned
// on the same key whose rows belong to its rows (the labels of a prediction, of a job row): a
// day partition of the table is dropped with the companions' partitions of the same day, in
// the same transaction (DropPartitionsBefore), so that no companion row outlives its subject
// there. A companion's rows in a partition that stays are the deleter's to delete by rows.
var Companions = map[string][]string{
	"predictions": {"prediction_labels", "prediction_label_history"},
	"job_results": {"job_labels", "job_label_history"},
}

// DayBound returns the smallest UUIDv7 of the UTC day of t: its Unix milliseconds at 00:00 UTC,
// then zeros.
func DayBound(t time.Time) uuid.UUID {
	day := t.UTC().Truncate(24 * time.Hour)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(day.UnixMilli()))
	var id uuid.UUID
	copy(id[:6], b[2:])
	return id
}

// Partition is one day partition of a table.
type Partition struct {
	Name string
	Day  time.Time // 00:00 UTC; the partition holds the keys of [DayBound(Day), DayBound(Day+1))
}

// PartitionName returns the name of table's partition of the UTC day of t.
func PartitionName(table string, t time.Time) string {
	return table + "_p" + t.UTC().Format("20060102")
}

var dayPartition = regexp.MustCompile(`_p(\d{8})$`)

// Partitions returns table's day partitions, oldest first (the default partition is not one).
func Partitions(ctx context.Context, db DBTX, table string) ([]Partition, error) {
	rows, err := db.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY c.relname`, table)
	if err != nil {
		return nil, fmt.Errorf("postgres: partitions of %s: %w", table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: partitions of %s: %w", table, err)
	}
	var out []Partition
	for _, n := range names {
		m := dayPartition.FindStringSubmatch(n)
		if m == nil || !strings.HasPrefix(n, table+"_p") {
			continue
		}
		day, err := time.Parse("20060102", m[1])
		if err != nil {
			continue
		}
		out = append(out, Partition{Name: n, Day: day})
	}
	return out, nil
}

// EnsurePartitions creates table's day partitions from the day of from through days days
// after it, those that do not exist, and returns how many it created. Keys of a new day that
// the default partition holds already (Postgres refuses to create a partition whose rows sit
// in the default one) are moved into it in the same transaction, so that none is lost.
func EnsurePartitions(ctx context.Context, pool *pgxpool.Pool, table string, from time.Time, days int) (int, error) {
	key, ok := PartitionedTables[table]
	if !ok {
		return 0, fmt.Errorf("postgres: %s is not a partitioned table", table)
	}
	have, err := Partitions(ctx, pool, table)
	if err != nil {
		return 0, err
	}
	exists := map[string]bool{}
	for _, p := range have {
		exists[p.Name] = true
	}
	created := 0
	day := from.UTC().Truncate(24 * time.Hour)
	for i := 0; i <= days; i++ {
		d := day.AddDate(0, 0, i)
		name := PartitionName(table, d)
		if exists[name] {
			continue
		}
		if err := createPartition(ctx, pool, table, key, name, d); err != nil {
			return created, err
		}
		created++
	}
	return created, nil
}

func createPartition(ctx context.Context, pool *pgxpool.Pool, table, key, name string, day time.Time) error {
	lo, hi := DayBound(day), DayBound(day.AddDate(0, 0, 1))
	t, p, def := pgx.Identifier{table}.Sanitize(), pgx.Identifier{name}.Sanitize(), pgx.Identifier{table + "_default"}.Sanitize()
	k := pgx.Identifier{key}.Sanitize()
	err := WithTx(ctx, pool, func(tx pgx.Tx) error {
		// A concurrent maintenance run may create the same partition: the second waits on the
		// lock and then finds it.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('predq partitions ' || $1))`, table); err != nil {
			return err
		}
		var found bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&found); err != nil || found {
			return err
		}
		tmp := pgx.Identifier{"predq_move_" + name}.Sanitize()
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE `+tmp+` (LIKE `+t+`) ON COMMIT DROP`); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `WITH moved AS (DELETE FROM `+def+` WHERE `+k+` >= $1 AND `+k+` < $2 RETURNING *)
			INSERT INTO `+tmp+` SELECT * FROM moved`, lo, hi)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`, p, t, lo, hi)); err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO `+t+` SELECT * FROM `+tmp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: create partition %s: %w", name, err)
	}
	return nil
}

// DropPartitionsBefore drops table's day partitions that end at or before before and that
// droppable (called in the transaction of the drop, holding the partition) says may go, each
// with the partitions of the same day of table's Companions, and returns how many rows of
// table went with them. A partition that straddles before, or one that
// droppable keeps, stays: its old rows are the caller's to delete by rows.
//
// Each drop is its own transaction with a lock_timeout: dropping a partition takes an ACCESS
// EXCLUSIVE lock on the table for an instant, and a drop that would queue behind a long query
// (and make every other query queue behind it) gives up instead; the rows are then deleted by
// the caller, or the partition dropped by the next run.
func DropPartitionsBefore(ctx context.Context, pool *pgxpool.Pool, table string, before time.Time,
	droppable func(ctx context.Context, tx pgx.Tx, p Partition) (bool, error),
) (int64, error) {
	parts, err := Partitions(ctx, pool, table)
	if err != nil {
		return 0, err
	}
	var rows int64
	for _, p := range parts {
		if p.Day.AddDate(0, 0, 1).After(before) {
			break
		}
		var n int64
		err := WithTx(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
				return err
			}
			ok, err := droppable(ctx, tx, p)
			if err != nil || !ok {
				return err
			}
			name := pgx.Identifier{p.Name}.Sanitize()
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+name).Scan(&n); err != nil {
				return err
			}
			var companions []string
			for _, c := range Companions[table] {
				companions = append(companions, pgx.Identifier{PartitionName(c, p.Day)}.Sanitize())
			}
			if len(companions) > 0 {
				// IF EXISTS: a companion added after its subject's day may lack old days.
				if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+strings.Join(companions, ", ")); err != nil {
					return err
				}
			}
			_, err = tx.Exec(ctx, `DROP TABLE `+name)
			return err
		})
		switch {
		case IsCode(err, CodeLockNotAvailable):
			n = 0 // the next run drops it, or the rows are deleted by rows
		case err != nil:
			return rows, fmt.Errorf("postgres: drop partition %s: %w", p.Name, err)
		}
		rows += n
	}
	return rows, nil
}

// CodeLockNotAvailable is the SQLSTATE of a lock_timeout.
const CodeLockNotAvailable = "55P03"
