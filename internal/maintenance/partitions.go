package maintenance

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/postgres"
)

// EnsurePartitions creates the day partitions of every partitioned table (predictions,
// job_results; see internal/postgres/partition.go) from the day of now through daysAhead days
// after it, those missing, and returns how many it created. Run often (the scheduler's
// maintenance:partitions, every PARTITION_INTERVAL), it keeps the partitions days ahead of the
// rows, so that the default partition stays empty; a run that was missed only sends that
// day's rows to the default partition, and the next run moves them into their day's.
func EnsurePartitions(ctx context.Context, pool *pgxpool.Pool, now time.Time, daysAhead int) (int, error) {
	created := 0
	for _, table := range slices.Sorted(maps.Keys(postgres.PartitionedTables)) {
		n, err := postgres.EnsurePartitions(ctx, pool, table, now, daysAhead)
		created += n
		if err != nil {
			return created, fmt.Errorf("partitions: %s: %w", table, err)
		}
	}
	return created, nil
}
