package pgtest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewGivesEachTestItsOwnMigratedDatabase(t *testing.T) {
	t.Parallel()
	a, b := New(t), New(t)
	ctx := context.Background()
	var nameA, nameB string
	require.NoError(t, a.QueryRow(ctx, "SELECT current_database()").Scan(&nameA))
	require.NoError(t, b.QueryRow(ctx, "SELECT current_database()").Scan(&nameB))
	require.NotEqual(t, nameA, nameB)
	_, err := a.Exec(ctx, "INSERT INTO api_keys (name, key_hash, prefix) VALUES ('x', '\\x01', 'p')")
	require.NoError(t, err)
	var n int
	require.NoError(t, b.QueryRow(ctx, "SELECT count(*) FROM api_keys").Scan(&n))
	require.Zero(t, n, "databases must not share rows")
}
