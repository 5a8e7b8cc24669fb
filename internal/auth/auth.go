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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
type Keys struct {
	static map[[32]byte]Principal
	pool   *pgxpool.Pool // nil: static keys only
	cache  sync.Map      // [32]byte → cachedKey: database answers kept for cacheTTL
}

type cachedKey struct {
	p       Principal
	ok      bool
	expires time.Time
}

// cacheTTL bounds how long a revoked key keeps working in a process, and how long an unknown
// key is remembered as unknown.
const cacheTTL = 30 * time.Second

// NewKeys builds the checker. Each static entry is "name:key" or "key" (named "static").
func NewKeys(static []string, pool *pgxpool.Pool) *Keys {
	k := &Keys{static: map[[32]byte]Principal{}, pool: pool}
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
	if v, hit := k.cache.Load(h); hit {
		c := v.(cachedKey)
		if time.Now().Before(c.expires) {
			if !c.ok {
				return Principal{}, ErrUnauthorized
			}
			return c.p, nil
		}
	}
	var p Principal
	err := k.pool.QueryRow(ctx, `SELECT name, prefix FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, h[:]).Scan(&p.Name, &p.KeyID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		k.cache.Store(h, cachedKey{ok: false, expires: time.Now().Add(cacheTTL)})
		return Principal{}, ErrUnauthorized
	case err != nil:
		return Principal{}, fmt.Errorf("%w: look up key: %v", ErrUnavailable, err)
	}
	k.cache.Store(h, cachedKey{p: p, ok: true, expires: time.Now().Add(cacheTTL)})
	return p, nil
}

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
