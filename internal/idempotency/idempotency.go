// Package idempotency implements Idempotency-Key semantics (as Stripe's API has them) on
// Postgres: the same key with the same body returns the first answer again; with another
// body it is refused; while the first request is still in flight, a second one is refused
// with a conflict. Keys are scoped to the API key that sent them.
//
// A request body may be streamed (millions of rows): its hash is only known at the end, so
// a key is claimed first and its hash recorded with the answer.
//
// A claim holds a lease, renewed while its request runs (Claim.Hold). A process that dies
// stops renewing it; once the lease lapses, the next request with the key takes the claim
// over, so a crash does not lock the key.
package idempotency

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/postgres"
)

// Sentinel errors.
var (
	// ErrInFlight: a request with this key is being processed.
	ErrInFlight = errors.New("a request with this Idempotency-Key is in flight")
	// ErrMismatch: the key was used with another request body.
	ErrMismatch = errors.New("the Idempotency-Key was used with another request body")
	// ErrLeaseLost: the claim's lease lapsed and another request took the key over.
	ErrLeaseLost = errors.New("the Idempotency-Key claim was taken over by another request")
)

// DefaultLease is how long a claim lasts without renewal when the store is given none.
const DefaultLease = 30 * time.Second

// MaxLease bounds a lease: a crashed process must not hold a key longer than this.
const MaxLease = time.Minute

// MaxKeyLength bounds a key.
const MaxKeyLength = 255

// Response is a stored answer.
type Response struct {
	Status   int
	Body     []byte
	Location string // the Location header of the answer, if it had one
}

// Store keeps the keys in the idempotency_keys table.
type Store struct {
	pool  *pgxpool.Pool
	lease time.Duration
}

// NewStore returns a store on pool whose claims last lease without renewal (DefaultLease when
// 0; at most MaxLease).
func NewStore(pool *pgxpool.Pool, lease time.Duration) *Store {
	return &Store{pool: pool, lease: min(cmp.Or(lease, DefaultLease), MaxLease)}
}

// Lease is how long a claim lasts without renewal.
func (s *Store) Lease() time.Duration { return s.lease }

// Claim takes key for a new request. It returns the claim when the caller owns the key now
// and must Complete or Release it; the stored answer (and its request hash, to compare) when
// the key was answered before; ErrInFlight when another request holds an unexpired lease on
// it. A claim whose lease lapsed is taken over in the same statement.
func (s *Store) Claim(ctx context.Context, owner, key string) (*Claim, *Stored, error) {
	token := uuid.New()
	tag, err := s.pool.Exec(ctx, `INSERT INTO idempotency_keys (owner, key, claim_token, lease_expires)
		VALUES ($1, $2, $3, now() + $4::interval)
		ON CONFLICT (owner, key) DO UPDATE SET created_at = now(), request_hash = NULL,
			claim_token = EXCLUDED.claim_token, lease_expires = EXCLUDED.lease_expires
		WHERE idempotency_keys.status = 'in_flight' AND idempotency_keys.lease_expires < now()`,
		owner, key, token, s.lease.String())
	if err != nil {
		return nil, nil, fmt.Errorf("idempotency: claim: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return &Claim{s: s, owner: owner, key: key, token: token}, nil, nil
	}
	var st Stored
	var status string
	var code *int
	var location *string
	err = s.pool.QueryRow(ctx, `SELECT status, request_hash, response_status, response_body, response_location
		FROM idempotency_keys WHERE owner = $1 AND key = $2`, owner, key).Scan(&status, &st.RequestHash, &code, &st.Response.Body, &location)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.Claim(ctx, owner, key) // released meanwhile: try again
	}
	if err != nil {
		return nil, nil, fmt.Errorf("idempotency: read: %w", err)
	}
	if status == "in_flight" {
		return nil, nil, ErrInFlight
	}
	if code != nil {
		st.Response.Status = *code
	}
	if location != nil {
		st.Response.Location = *location
	}
	return nil, &st, nil
}

// Stored is an answered key.
type Stored struct {
	RequestHash []byte
	Response    Response
}

// Replay compares the hash of a new request with the stored one: the stored response when
// they match, ErrMismatch otherwise.
func (st *Stored) Replay(requestHash []byte) (Response, error) {
	if !bytes.Equal(st.RequestHash, requestHash) {
		return Response{}, ErrMismatch
	}
	return st.Response, nil
}

// Claim is a key held by one request. Its statements change the row only while it still
// holds the key (its token is the row's), so a request whose claim was taken over cannot
// answer for the one that took it.
type Claim struct {
	s          *Store
	owner, key string
	token      uuid.UUID
}

// Renew extends the lease by the store's lease from now. It returns ErrLeaseLost when the
// key was taken over or released.
func (c *Claim) Renew(ctx context.Context) error {
	tag, err := c.s.pool.Exec(ctx, `UPDATE idempotency_keys SET lease_expires = now() + $4::interval
		WHERE owner = $1 AND key = $2 AND claim_token = $3 AND status = 'in_flight'`, c.owner, c.key, c.token, c.s.lease.String())
	if err != nil {
		return fmt.Errorf("idempotency: renew: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Complete records the answer of the claimed key. It returns ErrLeaseLost when the key was
// taken over meanwhile (nothing is recorded).
func (c *Claim) Complete(ctx context.Context, requestHash []byte, r Response) error {
	tag, err := c.s.pool.Exec(ctx, `UPDATE idempotency_keys SET status = 'done', request_hash = $4, response_status = $5,
			response_body = $6, response_location = NULLIF($7, '')
		WHERE owner = $1 AND key = $2 AND claim_token = $3 AND status = 'in_flight'`,
		c.owner, c.key, c.token, requestHash, r.Status, r.Body, r.Location)
	if err != nil {
		return fmt.Errorf("idempotency: complete: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Release gives the claimed key up (the request failed and may be retried with the same
// key). A key taken over meanwhile is left to its new holder.
func (c *Claim) Release(ctx context.Context) error {
	_, err := c.s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND claim_token = $3 AND status = 'in_flight'`,
		c.owner, c.key, c.token)
	if err != nil {
		return fmt.Errorf("idempotency: release: %w", err)
	}
	return nil
}

// Hold renews the lease every third of it until stop is called, for the request running
// under ctx. The returned context is ctx, cancelled with cause ErrLeaseLost when the key was
// taken over or could not be renewed before the lease lapsed (another request may hold it
// then, so this one must not answer). stop ends the renewals and reports whether the lease
// was lost.
func (c *Claim) Hold(ctx context.Context) (held context.Context, stop func() (lost bool)) {
	held, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var lost bool
	wg.Go(func() {
		every := c.s.lease / 3
		t := time.NewTicker(every)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-done:
				return
			case <-held.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), every)
			start := time.Now()
			err := c.Renew(rctx)
			rcancel()
			switch {
			case err == nil:
				renewed = start
			case errors.Is(err, ErrLeaseLost) || time.Since(renewed) >= c.s.lease:
				lost = true
				cancel(ErrLeaseLost)
				return
			}
		}
	})
	return held, func() bool {
		close(done)
		wg.Wait()
		cancel(nil)
		return lost
	}
}

// DeleteOlderThan deletes the keys created before before (answered or not) and returns how
// many went: a key older than its retention no longer protects a retry.
func (s *Store) DeleteOlderThan(ctx context.Context, before time.Time) (int64, error) {
	n, err := postgres.DeleteInBatches(ctx, s.pool, `DELETE FROM idempotency_keys WHERE (owner, key) IN (
		SELECT owner, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)`, before, 5000)
	if err != nil {
		return n, fmt.Errorf("idempotency: delete keys older than %s: %w", before.Format(time.RFC3339), err)
	}
	return n, nil
}

// Hasher hashes a request as it is read: wrap the body with Reader, and call Sum when it was
// read to the end. Method, path, query and content type are part of the hash.
type Hasher struct {
	h hash.Hash
}

// NewHasher starts a hash over the request's identity.
func NewHasher(method, path, query, contentType string) *Hasher {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", method, path, query, contentType)
	return &Hasher{h: h}
}

// Reader returns r, hashing what is read from it.
func (h *Hasher) Reader(r io.Reader) io.Reader { return io.TeeReader(r, h.h) }

// Drain reads the rest of r into the hash.
func (h *Hasher) Drain(r io.Reader) error {
	_, err := io.Copy(h.h, r)
	return err
}

// Sum is the hash of everything read.
func (h *Hasher) Sum() []byte { return h.h.Sum(nil) }
