// Package auth checks API keys: static keys from configuration and keys stored (as hashes)
// in Postgres.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// ErrUnauthorized is returned when a key is missing, unknown or revoked.
var ErrUnauthorized = errors.New("unauthorized")

// Principal is the identity behind an API key.
type Principal struct {
	Name  string // the key's name; recorded as user id with each prediction
	KeyID string // a stable, non-secret id of the key (a hash prefix)
}

// Keys checks API keys against the static keys of the configuration and the keys stored in
// Postgres. Only SHA-256 hashes are kept, in memory and in the database.
//
// Unknown keys are remembered in a bounded LRU (MaxUnknownKeys), so that random keys cost
// neither unbounded memory nor a lookup each while they are remembered; concurrent lookups
// of the same key share one query.
type Keys struct {
	static  map[[32]byte]Principal
	pool    *pgxpool.Pool                   // nil: static keys only
	cache   sync.Map                        // [32]byte → cachedKey: stored keys found, kept for cacheTTL
	unknown *lru.Cache[[32]byte, time.Time] // hash → when it stops being remembered as unknown
	flight  singleflight.Group
	lookups *prometheus.CounterVec
}

type cachedKey struct {
	p       Principal
	expires time.Time
}

// cacheTTL bounds how long a revoked key keeps working in a process, and how long an unknown
// key is remembered as unknown.
const cacheTTL = 30 * time.Second

// MaxUnknownKeys bounds the unknown keys remembered; past it the least recently seen is
// forgotten (and costs a lookup again when it comes back).
const MaxUnknownKeys = 10_000

// lookupTimeout bounds one database lookup, which callers of the same key share.
const lookupTimeout = 5 * time.Second

// NewKeys builds the checker. Each static entry is "name:key" or "key" (named "static").
// reg, when not nil, receives predq_auth_lookups_total{result} (found, unknown, error): the
// database lookups made.
func NewKeys(static []string, pool *pgxpool.Pool, reg prometheus.Registerer) *Keys {
	unknown, _ := lru.New[[32]byte, time.Time](MaxUnknownKeys) // errors only for a size ≤ 0
	k := &Keys{static: map[[32]byte]Principal{}, pool: pool, unknown: unknown,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "predq_auth_lookups_total",
			Help: "API key lookups in Postgres, by result (found, unknown, error).",
		}, []string{"result"})}
	for _, r := range []string{"found", "unknown", "error"} {
		k.lookups.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(k.lookups)
	}
	for _, entry := range static {
		name, key, ok := strings.Cut(entry, ":")
		if !ok {
			name, key = "static", entry
		}
		h := sha256.Sum256([]byte(key))
		k.static[h] = Principal{Name: name, KeyID: hex.EncodeToString(h[:6])}
	}
	return k
}

// Authenticate returns the principal of key, or ErrUnauthorized. The static keys are
// compared in constant time; stored keys are looked up by their hash, so the secret itself
// is never compared.
func (k *Keys) Authenticate(ctx context.Context, key string) (Principal, error) {
	if key == "" || len(key) > 256 {
		return Principal{}, ErrUnauthorized
	}
	h := sha256.Sum256([]byte(key))
	var found Principal
	ok := 0
	for sh, p := range k.static {
		if subtle.ConstantTimeCompare(sh[:], h[:]) == 1 {
			found, ok = p, 1
		}
	}
	if ok == 1 {
		return found, nil
	}
	if k.pool == nil {
		return Principal{}, ErrUnauthorized
	}
	now := time.Now()
	if v, hit := k.cache.Load(h); hit {
		if c := v.(cachedKey); now.Before(c.expires) {
			return c.p, nil
		}
		k.cache.Delete(h)
	}
	if until, hit := k.unknown.Get(h); hit {
		if now.Before(until) {
			return Principal{}, ErrUnauthorized
		}
		k.unknown.Remove(h)
	}
	// One query for all the concurrent callers of a key; it runs on its own deadline, so that
	// a caller that gives up does not fail the others.
	ch := k.flight.DoChan(string(h[:]), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		return k.lookup(lctx, h)
	})
	select {
	case <-ctx.Done():
		return Principal{}, fmt.Errorf("%w: look up key: %v", ErrUnavailable, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return Principal{}, r.Err
		}
		return r.Val.(Principal), nil
	}
}

// lookup finds the stored key of hash h and remembers the answer.
func (k *Keys) lookup(ctx context.Context, h [32]byte) (Principal, error) {
	var p Principal
	err := k.pool.QueryRow(ctx, `SELECT name, prefix FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, h[:]).Scan(&p.Name, &p.KeyID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		k.lookups.WithLabelValues("unknown").Inc()
		k.unknown.Add(h, time.Now().Add(cacheTTL))
		return Principal{}, ErrUnauthorized
	case err != nil:
		k.lookups.WithLabelValues("error").Inc()
		return Principal{}, fmt.Errorf("%w: look up key: %v", ErrUnavailable, err)
	}
	k.lookups.WithLabelValues("found").Inc()
	k.cache.Store(h, cachedKey{p: p, expires: time.Now().Add(cacheTTL)})
	return p, nil
}

// unknownKeys reports how many unknown keys are remembered.
func (k *Keys) unknownKeys() int { return k.unknown.Len() }

// Create stores a new key named name and returns it; the key is shown only this once.
func Create(ctx context.Context, pool *pgxpool.Pool, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", errors.New("auth: a key needs a name of 1 to 100 characters")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := "pq_" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(key))
	prefix := hex.EncodeToString(h[:6])
	if _, err := pool.Exec(ctx, `INSERT INTO api_keys (name, key_hash, prefix) VALUES ($1, $2, $3)`, name, h[:], prefix); err != nil {
		return "", fmt.Errorf("auth: store key: %w", err)
	}
	return key, nil
}

// ErrUnavailable is returned when a key cannot be checked because its store is down.
var ErrUnavailable = errors.New("api key store unavailable")
