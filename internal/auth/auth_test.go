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
	def := DefaultAttributes()
	for entry, want := range map[string]StaticKey{
		key:                            {Name: "key-" + id, Key: key, KeyID: id, Scopes: AllScopes(), Attributes: def},
		"ops:" + key:                   {Name: "ops", Key: key, KeyID: id, Scopes: AllScopes(), Attributes: def},
		"ops:" + key + ":predict":      {Name: "ops", Key: key, KeyID: id, Scopes: []Scope{ScopePredict}, Attributes: def},
		"ops:" + key + ":jobs+predict": {Name: "ops", Key: key, KeyID: id, Scopes: []Scope{ScopePredict, ScopeJobs}, Attributes: def},
		":" + key + ":admin":           {Name: "key-" + id, Key: key, KeyID: id, Scopes: []Scope{ScopeAdmin}, Attributes: def},
		"ci:" + key + ":review+review": {Name: "ci", Key: key, KeyID: id, Scopes: []Scope{ScopeReview}, Attributes: def},
		"ci:" + key + ":predict+jobs:class=bulk,weight=2,max_pending_rows=1000000,max_queued_jobs=10": {Name: "ci", Key: key, KeyID: id,
			Scopes: []Scope{ScopePredict, ScopeJobs}, Attributes: Attributes{Class: ClassBulk, Weight: 2, MaxPendingRows: 1_000_000, MaxQueuedJobs: 10}},
		"ci:" + key + "::weight=5":                 {Name: "ci", Key: key, KeyID: id, Scopes: AllScopes(), Attributes: Attributes{Class: ClassInteractive, Weight: 5}},
		"ci:" + key + ":jobs: class = interactive": {Name: "ci", Key: key, KeyID: id, Scopes: []Scope{ScopeJobs}, Attributes: def},
	} {
		got, err := ParseStaticKey(entry)
		require.NoError(t, err, entry)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("ParseStaticKey(%q) (-want +got):\n%s", entry, d)
		}
	}
	for entry, wantErr := range map[string]string{
		"ops:" + key + ":":                                     "unknown scope \"\"",
		"ops:" + key + ":root":                                 `unknown scope "root"`,
		"ops:" + key + ":predict,jobs":                         `unknown scope "predict,jobs"`,
		"ops:" + key + ":Predict":                              `unknown scope "Predict"`,
		"ops:" + key + ":predict:jobs":                         `attribute "jobs" is not name=value`,
		"ops:" + key + ":predict:class=bulk:x":                 "an entry is key, name:key, name:key:scopes or name:key:scopes:attributes",
		"ops:" + key + ":predict:class=bulk,class=interactive": "attribute class: given twice",
		"ops:" + key + ":predict:rank=1":                       `unknown attribute "rank"`,
		"ops:" + key + ":predict:class=":                       `attribute class: "" is not interactive or bulk`,
		"ops:" + key + ":predict:weight=1001":                  "attribute weight: 1001 is not in 1..1000",
		"ops:" + key + ":predict:weight=1.5":                   `attribute weight: "1.5" is not a whole number`,
		"ops:" + key + ":predict:max_pending_rows=-1":          "attribute max_pending_rows: -1 is negative",
		"ops:" + key + ":predict:max_queued_jobs=-2":           "attribute max_queued_jobs: -2 is negative",
		"ops:": "empty key",
		"":     "empty key",
	} {
		_, err := ParseStaticKey(entry)
		require.ErrorContains(t, err, wantErr, entry)
	}
}

// The comma-separated items of API_KEYS are grouped back into entries: an item continues the
// attributes of the entry before it only when that entry has attributes and the item is a
// name=value without ':'.
func TestGroupStaticEntries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want []string }{
		{[]string{"a:k1:predict:class=bulk", "weight=2", "max_queued_jobs=3", "b:k2"}, []string{"a:k1:predict:class=bulk,weight=2,max_queued_jobs=3", "b:k2"}},
		{[]string{"a:k1:predict", "weight=2222222222222222"}, []string{"a:k1:predict", "weight=2222222222222222"}},
		{[]string{"a:k1:predict:weight=2", "Base64Key0123456789=="}, []string{"a:k1:predict:weight=2", "Base64Key0123456789=="}},
		{[]string{"a:k1:predict:weight=2", "c:k3"}, []string{"a:k1:predict:weight=2", "c:k3"}},
		{[]string{"a:k1:predict:class=bulk,weight=2"}, []string{"a:k1:predict:class=bulk,weight=2"}},
		{[]string{"priority=1", "a:k1"}, []string{"priority=1", "a:k1"}},
	} {
		require.Equal(t, c.want, GroupStaticEntries(c.in), "%q", c.in)
	}
	k, err := NewKeys([]string{"ops:0123456789abcdef0123:predict:class=bulk", "weight=7"}, nil, nil)
	require.NoError(t, err)
	p, err := k.Authenticate(context.Background(), "0123456789abcdef0123")
	require.NoError(t, err)
	require.Equal(t, Attributes{Class: ClassBulk, Weight: 7}, p.Attributes())
}

func TestStoredKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	key, err := Create(ctx, pool, "analytics", nil, Attributes{})
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
	require.Equal(t, DefaultAttributes(), p.Attributes(), "a key created without attributes has the defaults")
	_, err = k.Authenticate(ctx, key+"x")
	require.ErrorIs(t, err, ErrUnauthorized)

	admin, err := Create(ctx, pool, "analytics", []Scope{ScopeAdmin}, Attributes{Class: ClassBulk, Weight: 3, MaxPendingRows: 5_000_000, MaxQueuedJobs: 4})
	require.NoError(t, err)
	pa, err := k.Authenticate(ctx, admin)
	require.NoError(t, err)
	require.Equal(t, []Scope{ScopeAdmin}, pa.Scopes)
	require.Equal(t, Attributes{Class: ClassBulk, Weight: 3, MaxPendingRows: 5_000_000, MaxQueuedJobs: 4}, pa.Attributes())
	var pending, queued *int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT max_pending_rows, max_queued_jobs FROM api_keys WHERE name = 'analytics' AND scopes = '{predict,jobs}'`).Scan(&pending, &queued))
	require.Nil(t, pending, "no quota given is stored as NULL: the configured default")
	require.Nil(t, queued)

	_, err = Create(ctx, pool, "x", nil, Attributes{Class: "batch"})
	require.ErrorContains(t, err, `attribute class: "batch"`)
	_, err = Create(ctx, pool, "x", nil, Attributes{MaxQueuedJobs: -1})
	require.ErrorContains(t, err, "attribute max_queued_jobs")
	_, err = pool.Exec(ctx, `UPDATE api_keys SET weight = 0`)
	require.Error(t, err, "the table refuses a weight below 1")
	_, err = pool.Exec(ctx, `UPDATE api_keys SET class = 'batch'`)
	require.Error(t, err, "the table refuses an unknown class")
	require.NotEqual(t, p.KeyID, pa.KeyID, "two keys of one name are two tenants")

	_, err = Create(ctx, pool, "x", []Scope{"root"}, Attributes{})
	require.ErrorContains(t, err, `unknown scope "root"`)
	_, err = pool.Exec(ctx, `UPDATE api_keys SET scopes = '{root}'`)
	require.Error(t, err, "the table refuses an unknown scope too")

	_, err = pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now()`)
	require.NoError(t, err)
	k, err = NewKeys(nil, pool, nil)
	require.NoError(t, err)
	_, err = k.Authenticate(ctx, key)
	require.ErrorIs(t, err, ErrUnauthorized, "a revoked key is refused")

	_, err = Create(ctx, pool, "  ", nil, Attributes{})
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
