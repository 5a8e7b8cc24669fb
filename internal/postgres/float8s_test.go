package postgres_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
)

func TestFloat8sRoundTripsThroughPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()

	m := conn.Conn().TypeMap()
	plan := m.PlanEncode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, postgres.Float8s{1})
	require.Equal(t, "postgres.encodeFloat8s", fmt.Sprintf("%T", plan), "connections of Open encode Float8s in one pass")

	in := []float64{0, math.Copysign(0, -1), 5e-324, -math.MaxFloat64, 0.1, 1.0 / 3, math.Inf(1), math.NaN()}
	// The same bytes as pgx's own encoding of a []float64.
	want, err := m.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, in, nil)
	require.NoError(t, err)
	got, err := m.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, postgres.Float8s(in), nil)
	require.NoError(t, err)
	require.Equal(t, want, got)

	var back []float64
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT $1::float8[], cardinality($1::float8[])`, postgres.Float8s(in)).Scan(&back, &n))
	require.Equal(t, len(in), n)
	for i, f := range in {
		require.Equal(t, math.Float64bits(f), math.Float64bits(back[i]), "element %d", i)
	}

	var empty, null bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT $1::float8[] = '{}', $2::float8[] IS NULL`,
		postgres.Float8s{}, postgres.Float8s(nil)).Scan(&empty, &null))
	require.True(t, empty, "an empty Float8s is the empty array")
	require.True(t, null, "a nil Float8s is NULL")

	// A connection without the codec (not opened by Open) still takes a Float8s.
	plain, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	require.NoError(t, err)
	defer plain.Close(ctx)
	require.NoError(t, plain.QueryRow(ctx, `SELECT $1::float8[]`, postgres.Float8s{4, 5}).Scan(&back))
	require.Equal(t, []float64{4, 5}, back)

	// Other float8[] values still go through pgx's codec.
	require.NoError(t, conn.QueryRow(ctx, `SELECT $1::float8[]`, []float64{2, 3}).Scan(&back))
	require.Equal(t, []float64{2, 3}, back)
}

// BenchmarkEncodeFeatures encodes the flat features of a 50-row persist batch (60 a row),
// as pgx's []float64 path and as Float8s.
func BenchmarkEncodeFeatures(b *testing.B) {
	conn, err := pgtest.New(b).Acquire(context.Background())
	require.NoError(b, err)
	defer conn.Release()
	m := conn.Conn().TypeMap()
	feats := make([]float64, 50*60)
	for i := range feats {
		feats[i] = float64(i) / 7
	}
	for _, v := range []any{feats, postgres.Float8s(feats)} {
		b.Run(fmt.Sprintf("%T", v), func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				if buf, err = m.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, v, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
