package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/validate"
)

// IdempotencyStore keeps Idempotency-Key answers (internal/idempotency.Store).
type IdempotencyStore interface {
	Claim(ctx context.Context, owner, key string) (*idempotency.Claim, *idempotency.Stored, error)
}

var _ IdempotencyStore = (*idempotency.Store)(nil)

// idempotent gives a route Idempotency-Key semantics (see internal/idempotency): a request
// with a key that was answered before gets that answer again, status, Location and body byte
// for byte, with Idempotent-Replayed: true (a predict's request_id and timestamp included,
// and nothing is predicted, recorded or submitted again); the same key with another body is
// 422; while the first request is in flight, 409. The body is hashed as the handler reads
// it, so a streamed job upload is never held in memory. The claim's lease is renewed while
// the handler runs. Only successful (2xx) answers are kept: after an error the key may be
// used again. Requests without the header pass through.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		key, err := idempotencyKey(req)
		if err != nil {
			return err
		}
		if key == "" || s.deps.Idempotency == nil {
			return next(c)
		}
		ctx := req.Context()
		query := req.URL.RawQuery
		if isOIPAsyncInfer(c) {
			// The same body asked for asynchronously is another request than asked for
			// synchronously: a key used for one is refused for the other.
			query += "\x00Prefer: respond-async"
		}
		hasher := idempotency.NewHasher(req.Method, req.URL.Path, query, req.Header.Get(echo.HeaderContentType))
		claim, stored, err := s.deps.Idempotency.Claim(ctx, tenantOf(c), key)
		if err != nil {
			return err
		}
		if stored != nil {
			return replay(c, stored, hasher, req.Body)
		}
		held, stop := claim.Hold(ctx)
		req = req.WithContext(held)
		req.Body = readCloser{hasher.Reader(req.Body), req.Body}
		c.SetRequest(req)
		rec := &recordingWriter{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rec
		err = next(c)
		c.Response().Writer = rec.ResponseWriter
		lost := stop()
		c.SetRequest(c.Request().WithContext(ctx)) // so that the outer middleware sees the request's own context
		cleanup := context.WithoutCancel(ctx)
		status := c.Response().Status
		if err != nil || status < 200 || status > 299 {
			_ = claim.Release(cleanup)
			if lost && err != nil {
				return fmt.Errorf("%w: %w", idempotency.ErrLeaseLost, err)
			}
			return err
		}
		_ = hasher.Drain(req.Body) // whatever follows the JSON value counts too
		if err := claim.Complete(cleanup, hasher.Sum(), idempotency.Response{Status: status, Body: rec.body.Bytes(),
			Location: c.Response().Header().Get(echo.HeaderLocation)}); err != nil {
			s.log.WarnContext(ctx, "idempotency key not recorded", "error", err.Error())
		}
		return nil
	}
}

// idempotencyKey returns the request's Idempotency-Key ("" when it has none), or a 400 when
// it is too long.
func idempotencyKey(req *http.Request) (string, error) {
	key := strings.TrimSpace(req.Header.Get("Idempotency-Key"))
	if len(key) > idempotency.MaxKeyLength {
		return "", badRequest("The Idempotency-Key header is too long.", []validate.FieldError{{Field: "Idempotency-Key",
			Message: fmt.Sprintf("must be at most %d characters", idempotency.MaxKeyLength)}}, nil)
	}
	return key, nil
}

// replay answers a request whose key was answered before: the stored answer when body (read
// to the end into hasher) is the same request, else ErrMismatch.
func replay(c echo.Context, stored *idempotency.Stored, hasher *idempotency.Hasher, body io.Reader) error {
	if err := hasher.Drain(body); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return err
		}
		return badRequest("The request body could not be read.", nil, err)
	}
	resp, err := stored.Replay(hasher.Sum())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Idempotent-Replayed", "true")
	if resp.Location != "" {
		c.Response().Header().Set(echo.HeaderLocation, resp.Location)
	}
	if resp.Status == http.StatusAccepted && isOIPAsyncInfer(c) {
		c.Response().Header().Set("Preference-Applied", "respond-async")
	}
	return c.Blob(resp.Status, echo.MIMEApplicationJSON, resp.Body)
}

// readCloser reads through r and closes c.
type readCloser struct {
	r io.Reader
	c io.Closer
}

func (rc readCloser) Read(p []byte) (int, error) { return rc.r.Read(p) }
func (rc readCloser) Close() error               { return rc.c.Close() }

// recordingWriter keeps a copy of the body it writes (before any compression, which wraps
// the writer further out).
type recordingWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
