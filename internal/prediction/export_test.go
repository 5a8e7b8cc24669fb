package prediction

import (
	"bytes"
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// WithoutDirectCopy makes Insert skip the direct COPY and take the conflict-handling path
// alone, as it did before the direct COPY: for the tests and benchmarks that compare them.
func WithoutDirectCopy() StoreOption {
	return func(s *Store) { s.pool = nil }
}

// CopySource and InsertCols are what insertCopy hands pgx's CopyFrom: the benchmark's
// pgx CopyFrom straight into predictions, compared with copyDirect, sends the same.
var (
	CopySource = copySource
	InsertCols = insertCols
)

// WithStepwiseCopy makes the direct COPY go through pgconn's CopyFrom (three flushes), as
// before sendCopy: for the benchmark that compares them.
func WithStepwiseCopy() StoreOption {
	return func(s *Store) { s.send = sendCopyStepwise }
}

// sendCopyStepwise is the COPY of recs through pgconn's CopyFrom, as copyDirect sent it
// before sendCopy.
func sendCopyStepwise(ctx context.Context, pc *pgconn.PgConn, recs []Record) (pgconn.CommandTag, error) {
	return pc.CopyFrom(ctx, bytes.NewReader(encodeCopyRows(nil, recs, time.Now())), copyDirectSQL)
}
