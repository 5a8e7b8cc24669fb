package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/admission"
)

// slugOverloaded is the problem type of a request shed by admission control.
const slugOverloaded = "overloaded"

// admit runs the handler of a synchronous route under admission control (Config.Admission):
// at once while the adaptive concurrency limit allows, else after a short wait in a queue
// that serves the key's priority class (auth.Principal.Class) before less important ones, or
// not at all: 503 problem+json (type …/problems/overloaded) with a Retry-After computed from
// the rate at which requests drain. It runs after authenticate, the rate limit (whose 429 is
// the key's own quota) and the scope check, so that only valid work waits. Routes apply it
// in routes.go; health, metrics, the docs and the asynchronous routes never do.
func (s *Server) admit(next echo.HandlerFunc) echo.HandlerFunc {
	ac := s.cfg.Admission
	if ac == nil {
		return next
	}
	return func(c echo.Context) error {
		p, _ := principalFrom(c.Request().Context())
		permit, err := ac.Acquire(c.Request().Context(), p.Class)
		if err != nil {
			if r, ok := errors.AsType[*admission.Rejected](err); ok {
				return overloaded(r)
			}
			return err // the client went away while it waited
		}
		defer permit.Release()
		return next(c)
	}
}

// admitSync is admit for a route that answers either way: an asynchronous request (Prefer:
// respond-async) only submits a job, whose capacity the batch queue shares out, so it is not
// admitted as synchronous work.
func (s *Server) admitSync(next echo.HandlerFunc) echo.HandlerFunc {
	admitted := s.admit(next)
	return func(c echo.Context) error {
		if prefersAsync(c.Request().Header) {
			return next(c)
		}
		return admitted(c)
	}
}

// overloaded is the 503 problem of a rejected request.
func overloaded(r *admission.Rejected) *problemError {
	why := map[string]string{
		admission.ReasonQueueFull: "the server is at its concurrency limit and its queue has no room for this priority class",
		admission.ReasonMaxWait:   "the server is at its concurrency limit and the request would wait too long for a slot",
		admission.ReasonShed:      "the request waited for a slot and gave its place to a more important one",
	}[r.Reason]
	return &problemError{
		status: http.StatusServiceUnavailable,
		slug:   slugOverloaded,
		title:  "Overloaded",
		detail: fmt.Sprintf("Not processed: %s (class %s). Retry after the Retry-After delay, computed from the current drain rate of %.0f requests/s.",
			why, r.Class, r.DrainRate),
		header: retryAfter(r.RetryAfter),
		cause:  r,
	}
}
