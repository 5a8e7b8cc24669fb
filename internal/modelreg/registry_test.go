package modelreg

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

// modelsDir copies the shipped artifacts into a temporary directory.
func modelsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	paths, err := filepath.Glob("../../models/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644))
	}
	return dir
}

func TestLoadRegistersVersionsAndLatest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	r := New(modelsDir(t), pool, slog.New(slog.DiscardHandler))
	require.NoError(t, r.Load(ctx))
	require.Equal(t, []string{"v1.0.0", "v2.0.0"}, r.Versions())
	require.Empty(t, r.Failures())

	m, err := r.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v2.0.0", m.Version)
	_, err = r.Resolve("v3.0.0")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = r.Resolve("stable")
	require.ErrorIs(t, err, ErrNotFound)

	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM model_versions`).Scan(&n))
	require.Equal(t, 2, n)
	var latest string
	require.NoError(t, pool.QueryRow(ctx, `SELECT version FROM model_aliases WHERE alias = 'latest'`).Scan(&latest))
	require.Equal(t, "v2.0.0", latest)

	t.Run("loading again changes nothing", func(t *testing.T) {
		require.NoError(t, r.Load(ctx))
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM model_versions`).Scan(&n))
		require.Equal(t, 2, n)
	})

	t.Run("a pinned latest is not moved", func(t *testing.T) {
		_, err := pool.Exec(ctx, `UPDATE model_aliases SET version = 'v1.0.0', pinned = true WHERE alias = 'latest'`)
		require.NoError(t, err)
		require.NoError(t, r.Load(ctx))
		m, err := r.Resolve("latest")
		require.NoError(t, err)
		require.Equal(t, "v1.0.0", m.Version)
		info, err := r.Get(ctx, "v1.0.0")
		require.NoError(t, err)
		require.Equal(t, []string{"latest"}, info.Aliases)
	})
}

func TestLoadSkipsCorruptArtifacts(t *testing.T) {
	t.Parallel()
	dir := modelsDir(t)
	p := filepath.Join(dir, "v2.0.0.json")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	b[len(b)/3] ^= 0x01
	require.NoError(t, os.WriteFile(p, b, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "v9.0.0.json"), []byte(`{"kind":`), 0o644))

	r := New(dir, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, r.Load(context.Background()))
	require.Equal(t, []string{"v1.0.0"}, r.Versions())
	f := r.Failures()
	require.Len(t, f, 2)
	require.Equal(t, "v2.0.0.json", f[0].File)
	require.Equal(t, "v9.0.0.json", f[1].File)
	m, err := r.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v1.0.0", m.Version)
}

func TestLoadWithoutPostgresStillServes(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	pool.Close() // a closed pool: every query fails
	r := New(modelsDir(t), pool, slog.New(slog.DiscardHandler))
	require.Error(t, r.Load(context.Background()))
	m, err := r.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v2.0.0", m.Version)
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	require.Equal(t, 1, CompareVersions("v10.0.0", "v9.9.9"))
	require.Equal(t, -1, CompareVersions("v1.2.3", "v1.10.0"))
	require.Equal(t, 0, CompareVersions("v1.0.0", "v1.0.0"))
}

func TestPromoteAndRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	dir := modelsDir(t)
	a := New(dir, pool, slog.New(slog.DiscardHandler))
	b := New(dir, pool, slog.New(slog.DiscardHandler)) // a second process
	require.NoError(t, a.Load(ctx))
	require.NoError(t, b.Load(ctx))

	m, err := b.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v2.0.0", m.Version)

	require.NoError(t, a.Promote(ctx, "v1.0.0", "latest"))
	m, err = a.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v1.0.0", m.Version, "the promoting process switches at once")

	inFlight, err := b.Resolve("latest") // a request that started before b refreshed
	require.NoError(t, err)
	require.NoError(t, b.Refresh(ctx))
	m, err = b.Resolve("latest")
	require.NoError(t, err)
	require.Equal(t, "v1.0.0", m.Version)
	require.Equal(t, "v2.0.0", inFlight.Version, "a resolved model stays what it was")

	require.NoError(t, a.Promote(ctx, "v2.0.0", "stable"))
	m, err = a.Resolve("stable")
	require.NoError(t, err)
	require.Equal(t, "v2.0.0", m.Version)

	require.ErrorIs(t, a.Promote(ctx, "v9.0.0", "latest"), ErrNotFound)
	require.ErrorIs(t, a.Promote(ctx, "v1.0.0", "Bad Alias"), ErrInvalidAlias)

	// A new artifact under MODEL_PATH is registered by the next refresh.
	src, err := os.ReadFile(filepath.Join(dir, "v1.0.0.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "copy.json"), src, 0o644))
	require.NoError(t, b.Refresh(ctx))
	require.Len(t, b.Failures(), 1, "a second file of the same version is refused, not loaded twice")
}
