package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func keyID(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:6])
}

func TestStaticKeys(t *testing.T) {
	t.Parallel()
	k, err := NewKeys([]string{"ops:0123456789abcdef0123", "fedcba9876543210fedc", "aaaabbbbccccddddeeee", "ro:1111222233334444:predict"}, nil, nil)
	require.NoError(t, err)
	p, err := k.Authenticate(context.Background(), "0123456789abcdef0123")
	require.NoError(t, err)
	require.Equal(t, "ops", p.Name)
	require.Equal(t, keyID("0123456789abcdef0123"), p.KeyID)
	require.Equal(t, AllScopes(), p.Scopes, "a static key without scopes has every one")

	a, err := k.Authenticate(context.Background(), "fedcba9876543210fedc")
	require.NoError(t, err)
	b, err := k.Authenticate(context.Background(), "aaaabbbbccccddddeeee")
	require.NoError(t, err)
	require.Equal(t, "key-"+a.KeyID, a.Name, "an unnamed key is named after its own id")
	require.NotEqual(t, a.Name, b.Name, "two unnamed keys never share a name")
	require.NotEqual(t, a.KeyID, b.KeyID)

	ro, err := k.Authenticate(context.Background(), "1111222233334444")
	require.NoError(t, err)
	require.True(t, ro.Can(ScopePredict))
	require.False(t, ro.Can(ScopeJobs))
	require.False(t, ro.Can(ScopeAdmin))

	for _, bad := range []string{"", "0123456789abcdef012", "ops:0123456789abcdef0123", "x"} {
		_, err := k.Authenticate(context.Background(), bad)
		require.ErrorIs(t, err, ErrUnauthorized, bad)
	}

	_, err = NewKeys([]string{"ops:0123456789abcdef0123:predict+root"}, nil, nil)
	require.ErrorContains(t, err, `static key 1: unknown scope "root"`)
	require.NotContains(t, err.Error(), "0123456789abcdef0123", "the error never shows the key")
}

func TestParseStaticKey(t *testing.T) {
	t.Parallel()
	const key = "0123456789abcdef0123"
	id := keyID(key)
	for entry, want := range map[string]StaticKey{
		key:                            {Name: "key-" + id, Key: key, KeyID: id, Scopes: AllScopes()},
		"ops:" + key:                   {Name: "ops", Key: key, KeyID: id, Scopes: AllScopes()},
		"ops:" + key + ":predict":      {Name: "ops", Key: key, KeyID: id, Scopes: []Scope{ScopePredict}},
		"ops:" + key + ":jobs+predict": {Name: "ops", Key: key, KeyID: id, Scopes: []Scope{ScopePredict, ScopeJobs}},
		":" + key + ":admin":           {Name: "key-" + id, Key: key, KeyID: id, Scopes: []Scope{ScopeAdmin}},
		"ci:" + key + ":review+review": {Name: "ci", Key: key, KeyID: id, Scopes: []Scope{ScopeReview}},
	} {
		got, err := ParseStaticKey(entry)
		require.NoError(t, err, entry)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("ParseStaticKey(%q) (-want +got):\n%s", entry, d)
		}
	}
	for entry, wantErr := range map[string]string{
		"ops:" + key + ":":             "unknown scope \"\"",
		"ops:" + key + ":root":         `unknown scope "root"`,
		"ops:" + key + ":predict,jobs": `unknown scope "predict,jobs"`,
		"ops:" + key + ":Predict":      `unknown scope "Predict"`,
		"ops:" + key + ":predict:jobs": "an entry is key, name:key or name:key:scopes",
		"ops:":                         "empty key",
		"":                             "empty key",
	} {
		_, err := ParseStaticKey(entry)
		require.ErrorContains(t, err, wantErr, entry)
	}
}

func TestStoredKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	key, err := Create(ctx, pool, "analytics", nil)
	require.NoError(t, err)
	require.Regexp(t, `^pq_[A-Za-z0-9_-]{43}$`, key)

	var stored []byte
	require.NoError(t, pool.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE name = 'analytics'`).Scan(&stored))
	require.NotContains(t, string(stored), key, "only a hash is stored")

	k, err := NewKeys(nil, pool, nil)
	require.NoError(t, err)
	p, err := k.Authenticate(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "analytics", p.Name)
	require.Equal(t, keyID(key), p.KeyID)
	require.Equal(t, DefaultStoredScopes(), p.Scopes, "a key created without scopes may predict and run jobs, not administer")
	_, err = k.Authenticate(ctx, key+"x")
	require.ErrorIs(t, err, ErrUnauthorized)

	admin, err := Create(ctx, pool, "analytics", []Scope{ScopeAdmin})
	require.NoError(t, err)
	pa, err := k.Authenticate(ctx, admin)
	require.NoError(t, err)
	require.Equal(t, []Scope{ScopeAdmin}, pa.Scopes)
	require.NotEqual(t, p.KeyID, pa.KeyID, "two keys of one name are two tenants")

	_, err = Create(ctx, pool, "x", []Scope{"root"})
	require.ErrorContains(t, err, `unknown scope "root"`)
	_, err = pool.Exec(ctx, `UPDATE api_keys SET scopes = '{root}'`)
	require.Error(t, err, "the table refuses an unknown scope too")

	_, err = pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now()`)
	require.NoError(t, err)
	k, err = NewKeys(nil, pool, nil)
	require.NoError(t, err)
	_, err = k.Authenticate(ctx, key)
	require.ErrorIs(t, err, ErrUnauthorized, "a revoked key is refused")

	_, err = Create(ctx, pool, "  ", nil)
	require.Error(t, err)
}

func TestUnknownKeysAreBoundedAndCoalesced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	reg := prometheus.NewRegistry()
	k, err := NewKeys(nil, pool, reg)
	require.NoError(t, err)
	lookups := func(result string) float64 { return testutil.ToFloat64(k.lookups.WithLabelValues(result)) }

	t.Run("concurrent callers of one key share a lookup, and it is remembered", func(t *testing.T) {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				<-start
				_, err := k.Authenticate(ctx, "unknown-key-shared-by-all")
				require.ErrorIs(t, err, ErrUnauthorized)
			})
		}
		close(start)
		wg.Wait()
		_, err := k.Authenticate(ctx, "unknown-key-shared-by-all")
		require.ErrorIs(t, err, ErrUnauthorized)
		require.Equal(t, 1.0, lookups("unknown"))
	})

	t.Run("the unknown keys remembered stay under the cap", func(t *testing.T) {
		n := MaxUnknownKeys + 500
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					_, err := k.Authenticate(ctx, fmt.Sprintf("random-key-%08d", i))
					require.ErrorIs(t, err, ErrUnauthorized)
				}
			})
		}
		wg.Wait()
		require.Equal(t, MaxUnknownKeys, k.unknownKeys())
		require.Equal(t, float64(n+1), lookups("unknown"))
		require.Equal(t, 0.0, lookups("error"))
	})
}
