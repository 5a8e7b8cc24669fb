// Package auth checks API keys: static keys from configuration and keys stored (as hashes)
// in Postgres.
package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
//
// KeyID is the tenant: every resource a key makes (predictions, jobs, idempotency keys, its
// rate limit) is stored under it and read back only by it. Names are labels for people and
// logs, never an owner, because two keys may share one.
//
// Class, Weight, MaxPendingRows and MaxQueuedJobs are the key's attributes (see Attributes):
// a key without any has DefaultAttributes.
type Principal struct {
	Name   string  // the key's name, for logs; an unnamed static key's is "key-"+KeyID
	KeyID  string  // the tenant: a stable, non-secret id of the key (a hash prefix)
	Scopes []Scope // what the key may do

	Class          string // priority class of its synchronous work: ClassInteractive or ClassBulk
	Weight         int    // its share of batch capacity relative to other keys, ≥ 1
	MaxPendingRows int64  // rows it may have pending across its jobs; 0: the configured default
	MaxQueuedJobs  int    // jobs it may have queued; 0: the configured default
}

// Attributes returns the key's attributes.
func (p Principal) Attributes() Attributes {
	return Attributes{Class: p.Class, Weight: p.Weight, MaxPendingRows: p.MaxPendingRows, MaxQueuedJobs: p.MaxQueuedJobs}
}

func (p Principal) with(a Attributes) Principal {
	p.Class, p.Weight, p.MaxPendingRows, p.MaxQueuedJobs = a.Class, a.Weight, a.MaxPendingRows, a.MaxQueuedJobs
	return p
}

// Can reports whether the key has scope s.
func (p Principal) Can(s Scope) bool { return slices.Contains(p.Scopes, s) }

// Scope is a permission of an API key.
type Scope string

// The scopes. ScopeReview is reserved for the review routes of a later release.
const (
	ScopePredict Scope = "predict" // predict, batch predict, read predictions
	ScopeJobs    Scope = "jobs"    // submit and read batch jobs
	ScopeAdmin   Scope = "admin"   // promote model versions
	ScopeReview  Scope = "review"  // reserved
)

// AllScopes returns every scope, which a static key has unless its entry lists some.
func AllScopes() []Scope { return []Scope{ScopePredict, ScopeJobs, ScopeAdmin, ScopeReview} }

// DefaultStoredScopes returns the scopes of a stored key created without any: not admin.
func DefaultStoredScopes() []Scope { return []Scope{ScopePredict, ScopeJobs} }

// ParseScopes checks names against the known scopes and returns them, deduplicated, in
// the order of AllScopes. No names is an error: a key that may do nothing is a mistake.
func ParseScopes(names []string) ([]Scope, error) {
	if len(names) == 0 {
		return nil, errors.New("no scope given (want predict, jobs, admin or review)")
	}
	var out []Scope
	for _, s := range AllScopes() {
		if slices.Contains(names, string(s)) {
			out = append(out, s)
		}
	}
	for _, n := range names {
		if !slices.Contains(AllScopes(), Scope(n)) {
			return nil, fmt.Errorf("unknown scope %q (want predict, jobs, admin or review)", truncate(n, 32))
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// The priority classes of a key's synchronous work: under overload bulk is shed first.
const (
	ClassInteractive = "interactive" // the default
	ClassBulk        = "bulk"
)

// Classes returns the priority classes, the most important first.
func Classes() []string { return []string{ClassInteractive, ClassBulk} }

// MaxWeight bounds a key's weight.
const MaxWeight = 1000

// Attributes are what a key carries besides its scopes: its priority class, its weight in the
// fair share of batch capacity and its quotas (0: the configured default).
type Attributes struct {
	Class          string
	Weight         int
	MaxPendingRows int64
	MaxQueuedJobs  int
}

// DefaultAttributes returns the attributes of a key that sets none: interactive, weight 1, the
// configured quotas.
func DefaultAttributes() Attributes { return Attributes{Class: ClassInteractive, Weight: 1} }

// withDefaults fills the zero class and weight.
func (a Attributes) withDefaults() Attributes {
	a.Class = cmp.Or(a.Class, ClassInteractive)
	a.Weight = cmp.Or(a.Weight, 1)
	return a
}

// Check reports the first attribute out of its range, named as in a static entry.
func (a Attributes) Check() error {
	switch {
	case !slices.Contains(Classes(), a.Class):
		return fmt.Errorf("attribute class: %q is not interactive or bulk", truncate(a.Class, 32))
	case a.Weight < 1 || a.Weight > MaxWeight:
		return fmt.Errorf("attribute weight: %d is not in 1..%d", a.Weight, MaxWeight)
	case a.MaxPendingRows < 0:
		return fmt.Errorf("attribute max_pending_rows: %d is negative (0: the default)", a.MaxPendingRows)
	case a.MaxQueuedJobs < 0:
		return fmt.Errorf("attribute max_queued_jobs: %d is negative (0: the default)", a.MaxQueuedJobs)
	}
	return nil
}

// ParseAttributes parses comma-separated k=v attributes: class=interactive|bulk, weight=1..1000,
// max_pending_rows=N, max_queued_jobs=N (N ≥ 0, 0: the configured default). The attributes
// not given keep DefaultAttributes. An unknown attribute, a repeated one or a bad value is an
// error naming it.
func ParseAttributes(s string) (Attributes, error) {
	a := DefaultAttributes()
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return Attributes{}, fmt.Errorf("attribute %q is not name=value", truncate(kv, 32))
		}
		if seen[k] {
			return Attributes{}, fmt.Errorf("attribute %s: given twice", truncate(k, 32))
		}
		seen[k] = true
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "class":
			a.Class = v
		case "weight":
			a.Weight, err = strconv.Atoi(v)
		case "max_pending_rows":
			a.MaxPendingRows, err = strconv.ParseInt(v, 10, 64)
		case "max_queued_jobs":
			a.MaxQueuedJobs, err = strconv.Atoi(v)
		default:
			return Attributes{}, fmt.Errorf("unknown attribute %q (want class, weight, max_pending_rows or max_queued_jobs)", truncate(k, 32))
		}
		if err != nil {
			return Attributes{}, fmt.Errorf("attribute %s: %q is not a whole number", k, truncate(v, 32))
		}
	}
	if err := a.Check(); err != nil {
		return Attributes{}, err
	}
	return a, nil
}

// StaticKey is one parsed entry of the static keys.
type StaticKey struct {
	Name   string // "key-"+KeyID when the entry names none
	Key    string
	KeyID  string
	Scopes []Scope
	Attributes
}

// ParseStaticKey parses one static entry: "key", "name:key", "name:key:scopes" or
// "name:key:scopes:attributes", where scopes are joined by "+" (predict+jobs), an empty name
// (":key:predict") means unnamed, and attributes are as ParseAttributes reads them
// (class=bulk,weight=2). A key therefore contains no ':'. Without scopes (an empty scopes
// field when attributes follow) the key has every scope; without attributes it has
// DefaultAttributes. The errors never quote the key.
func ParseStaticKey(entry string) (StaticKey, error) {
	var sk StaticKey
	f := strings.Split(entry, ":")
	switch len(f) {
	case 1:
		sk.Key = f[0]
	case 2, 3, 4:
		sk.Name, sk.Key = strings.TrimSpace(f[0]), f[1]
	default:
		return StaticKey{}, errors.New("an entry is key, name:key, name:key:scopes or name:key:scopes:attributes (a key has no ':')")
	}
	if sk.Key == "" {
		return StaticKey{}, errors.New("an entry has an empty key")
	}
	sk.Scopes = AllScopes()
	if len(f) == 3 || (len(f) == 4 && f[2] != "") {
		s, err := ParseScopes(strings.Split(f[2], "+"))
		if err != nil {
			return StaticKey{}, err
		}
		sk.Scopes = s
	}
	sk.Attributes = DefaultAttributes()
	if len(f) == 4 {
		a, err := ParseAttributes(f[3])
		if err != nil {
			return StaticKey{}, err
		}
		sk.Attributes = a
	}
	h := sha256.Sum256([]byte(sk.Key))
	sk.KeyID = hex.EncodeToString(h[:6])
	if sk.Name == "" {
		sk.Name = "key-" + sk.KeyID
	}
	return sk, nil
}

// GroupStaticEntries undoes the split of a comma-separated list of static entries inside
// their attributes: an item without ':' whose text before its first '=' is a lower-case
// name (max_queued_jobs=10) continues the attributes of the entry before it, when that entry
// has attributes (four ':'-separated fields). Any other item is an entry of its own. Entries
// already grouped are kept as they are.
func GroupStaticEntries(items []string) []string {
	var out []string
	for _, it := range items {
		if n := len(out); n > 0 && strings.Count(out[n-1], ":") == 3 && isAttributeItem(it) {
			out[n-1] += "," + it
			continue
		}
		out = append(out, it)
	}
	return out
}

func isAttributeItem(s string) bool {
	k, _, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || k == "" || strings.Contains(s, ":") {
		return false
	}
	return strings.IndexFunc(k, func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) < 0
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

// NewKeys builds the checker. Each static entry is parsed by ParseStaticKey; the error of a
// bad one names its position, not its key. reg, when not nil, receives
// predq_auth_lookups_total{result} (found, unknown, error): the database lookups made.
func NewKeys(static []string, pool *pgxpool.Pool, reg prometheus.Registerer) (*Keys, error) {
	unknown, _ := lru.New[[32]byte, time.Time](MaxUnknownKeys) // errors only for a size ≤ 0
	k := &Keys{static: map[[32]byte]Principal{}, pool: pool, unknown: unknown,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "predq_auth_lookups_total",
			Help: "API key lookups in Postgres, by result (found, unknown, error).",
		}, []string{"result"})}
	for _, r := range []string{"found", "unknown", "error"} {
		k.lookups.WithLabelValues(r)
	}
	for i, entry := range GroupStaticEntries(static) {
		sk, err := ParseStaticKey(entry)
		if err != nil {
			return nil, fmt.Errorf("auth: static key %d: %w", i+1, err)
		}
		k.static[sha256.Sum256([]byte(sk.Key))] = Principal{Name: sk.Name, KeyID: sk.KeyID, Scopes: sk.Scopes}.with(sk.Attributes)
	}
	if reg != nil {
		reg.MustRegister(k.lookups)
	}
	return k, nil
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
		return Principal{}, fmt.Errorf("%w: look up key: %w", ErrUnavailable, ctx.Err())
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
	var scopes []string
	err := k.pool.QueryRow(ctx, `SELECT name, prefix, scopes, class, weight, coalesce(max_pending_rows, 0), coalesce(max_queued_jobs, 0)
		FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, h[:]).
		Scan(&p.Name, &p.KeyID, &scopes, &p.Class, &p.Weight, &p.MaxPendingRows, &p.MaxQueuedJobs)
	for _, s := range scopes {
		p.Scopes = append(p.Scopes, Scope(s))
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		k.lookups.WithLabelValues("unknown").Inc()
		k.unknown.Add(h, time.Now().Add(cacheTTL))
		return Principal{}, ErrUnauthorized
	case err != nil:
		k.lookups.WithLabelValues("error").Inc()
		return Principal{}, fmt.Errorf("%w: look up key: %w", ErrUnavailable, err)
	}
	k.lookups.WithLabelValues("found").Inc()
	k.cache.Store(h, cachedKey{p: p, expires: time.Now().Add(cacheTTL)})
	return p, nil
}

// unknownKeys reports how many unknown keys are remembered.
func (k *Keys) unknownKeys() int { return k.unknown.Len() }

// Create stores a new key named name with scopes (DefaultStoredScopes when none) and attrs
// (a zero class or weight: the default) and returns it; the key is shown only this once. Its
// tenant is its KeyID, not its name.
func Create(ctx context.Context, pool *pgxpool.Pool, name string, scopes []Scope, attrs Attributes) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", errors.New("auth: a key needs a name of 1 to 100 characters")
	}
	if len(scopes) == 0 {
		scopes = DefaultStoredScopes()
	}
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = string(s)
	}
	if _, err := ParseScopes(names); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	attrs = attrs.withDefaults()
	if err := attrs.Check(); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := "pq_" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(key))
	prefix := hex.EncodeToString(h[:6])
	if _, err := pool.Exec(ctx, `INSERT INTO api_keys (name, key_hash, prefix, scopes, class, weight, max_pending_rows, max_queued_jobs)
		VALUES ($1, $2, $3, $4, $5, $6, nullif($7, 0), nullif($8, 0))`,
		name, h[:], prefix, names, attrs.Class, attrs.Weight, attrs.MaxPendingRows, attrs.MaxQueuedJobs); err != nil {
		return "", fmt.Errorf("auth: store key: %w", err)
	}
	return key, nil
}

// ErrUnavailable is returned when a key cannot be checked because its store is down.
var ErrUnavailable = errors.New("api key store unavailable")
