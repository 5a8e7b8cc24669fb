// Package idempotency implements Idempotency-Key semantics (as Stripe's API has them) on
// Postgres: the same key with the same body returns the first answer again; with another
// body it is refused; while the first request is still in flight, a second one is refused
// with a conflict. Keys are scoped to the API key that sent them.
//
// A request body may be streamed (millions of rows): its hash is only known at the end, so
// a key is claimed first and its hash recorded with the answer.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Sentinel errors.
var (
	// ErrInFlight: a request with this key is being processed.
	ErrInFlight = errors.New("a request with this Idempotency-Key is in flight")
	// ErrMismatch: the key was used with another request body.
	ErrMismatch = errors.New("the Idempotency-Key was used with another request body")
)

// Abandoned is how long an in-flight claim may stay unanswered before a new request may take
// it over (its process died).
const Abandoned = 10 * time.Minute

// MaxKeyLength bounds a key.
const MaxKeyLength = 255

// Response is a stored answer.
type Response struct {
	Status     int
	Body       []byte
	ResourceID string
}

// Store keeps the keys in the idempotency_keys table.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Claim takes key for a new request. It returns (nil, nil) when the caller owns the key now
// and must call Complete or Release; the stored answer (and its request hash, to compare)
// when the key was answered before; ErrInFlight when another request holds it.
func (s *Store) Claim(ctx context.Context, owner, key string) (*Stored, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO idempotency_keys (owner, key) VALUES ($1, $2)
		ON CONFLICT (owner, key) DO UPDATE SET created_at = now(), request_hash = NULL
		WHERE idempotency_keys.status = 'in_flight' AND idempotency_keys.created_at < now() - $3::interval`,
		owner, key, Abandoned.String())
	if err != nil {
		return nil, fmt.Errorf("idempotency: claim: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	var st Stored
	var status string
	var code *int
	var resource *string
	err = s.pool.QueryRow(ctx, `SELECT status, request_hash, response_status, response_body, resource_id
		FROM idempotency_keys WHERE owner = $1 AND key = $2`, owner, key).Scan(&status, &st.RequestHash, &code, &st.Response.Body, &resource)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.Claim(ctx, owner, key) // released meanwhile: try again
	}
	if err != nil {
		return nil, fmt.Errorf("idempotency: read: %w", err)
	}
	if status == "in_flight" {
		return nil, ErrInFlight
	}
	if code != nil {
		st.Response.Status = *code
	}
	if resource != nil {
		st.Response.ResourceID = *resource
	}
	return &st, nil
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

// Complete records the answer of a claimed key.
func (s *Store) Complete(ctx context.Context, owner, key string, requestHash []byte, r Response) error {
	_, err := s.pool.Exec(ctx, `UPDATE idempotency_keys SET status = 'done', request_hash = $3, response_status = $4,
			response_body = $5, resource_id = NULLIF($6, '')
		WHERE owner = $1 AND key = $2`, owner, key, requestHash, r.Status, r.Body, r.ResourceID)
	if err != nil {
		return fmt.Errorf("idempotency: complete: %w", err)
	}
	return nil
}

// Release gives a claimed key up (the request failed and may be retried with the same key).
func (s *Store) Release(ctx context.Context, owner, key string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND status = 'in_flight'`, owner, key)
	if err != nil {
		return fmt.Errorf("idempotency: release: %w", err)
	}
	return nil
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
