package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// problemTypeBase prefixes the type URI of every problem this API defines.
const problemTypeBase = "https://predq.dev/problems/"

// maxProblemErrors caps the field errors of one problem; the detail says how many there were.
const maxProblemErrors = 100

// retryAfterNoModels is the Retry-After of a 503 while no model is loaded.
const retryAfterNoModels = 5 * time.Second

// retryAfterUnavailable is the Retry-After of a 503 while a store is down.
const retryAfterUnavailable = 5 * time.Second

// Problem is the RFC 9457 problem details body of every error response
// (Content-Type: application/problem+json).
type Problem struct {
	// Type identifies the kind of problem: https://predq.dev/problems/<slug>, or about:blank.
	Type string `json:"type"`
	// Title is a short summary of the kind of problem.
	Title string `json:"title"`
	// Status repeats the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence.
	Detail string `json:"detail,omitempty"`
	// Instance is the request path.
	Instance string `json:"instance,omitempty"`
	// RequestID repeats the X-Request-ID response header.
	RequestID string `json:"request_id,omitempty"`
	// Errors names each offending field, as a JSON path the client wrote ("features[3]").
	Errors []validate.FieldError `json:"errors,omitempty"`
	// Quota, Limit, Current and Requested name the job quota a submission was refused by
	// (429): pending_rows or queued_jobs, the key's limit, its figure without this
	// submission, and what the submission adds.
	Quota     string `json:"quota,omitempty"`
	Limit     *int64 `json:"limit,omitempty"`
	Current   *int64 `json:"current,omitempty"`
	Requested *int64 `json:"requested,omitempty"`
}

// problemError is an error that already knows its problem: handlers and middleware return
// it for conditions only the HTTP edge sees (bad JSON, content type, rate limit).
type problemError struct {
	status int
	slug   string // type suffix; empty means about:blank
	title  string // empty means http.StatusText(status)
	detail string
	fields []validate.FieldError
	header http.Header
	cause  error // for errors.Is; never shown to the client
}

func (e *problemError) Error() string {
	msg := fmt.Sprintf("%d %s", e.status, e.detail)
	for _, f := range e.fields {
		msg += "; " + f.Field + ": " + f.Message
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *problemError) Unwrap() error { return e.cause }

// Problem slugs and titles, one per kind of problem.
const (
	slugMalformed        = "malformed-request"
	slugValidation       = "validation-error"
	slugNotFound         = "not-found"
	slugModelNotFound    = "model-not-found"
	slugMethodNotAllowed = "method-not-allowed"
	slugTooLarge         = "payload-too-large"
	slugMediaType        = "unsupported-media-type"
	slugUnauthorized     = "unauthorized"
	slugForbidden        = "forbidden"
	slugRateLimited      = "rate-limited"
	slugQuotaExceeded    = "quota-exceeded"
	slugUnavailable      = "service-unavailable"
	slugInternal         = "internal-error"
	slugInputsGone       = "job-inputs-gone"
)

// problemFor maps any error returned by a handler or middleware to the problem the client
// sees, its extra headers, and whether it is a server fault that must be logged. It is the
// one place that knows how errors become HTTP.
func problemFor(err error) (p Problem, header http.Header, serverFault bool) {
	newP := func(status int, slug, title, detail string) Problem {
		typ := "about:blank"
		if slug != "" {
			typ = problemTypeBase + slug
		}
		if title == "" {
			title = http.StatusText(status)
		}
		return Problem{Type: typ, Title: title, Status: status, Detail: detail}
	}

	if errors.Is(err, idempotency.ErrLeaseLost) {
		return newP(http.StatusConflict, slugConflict, "Request taken over",
			"This request's Idempotency-Key claim lapsed and another request with the key took it over; that request answers."), retryAfter(time.Second), false
	}
	if pe, ok := errors.AsType[*problemError](err); ok {
		p = newP(pe.status, pe.slug, pe.title, pe.detail)
		p.Errors = pe.fields
		// A shed request is the server working as designed, not a fault to log.
		return p, pe.header, pe.status >= 500 && pe.slug != slugOverloaded
	}
	if ve, ok := errors.AsType[*validate.Error](err); ok && ve.Len() > 0 {
		p = newP(http.StatusUnprocessableEntity, slugValidation, "Invalid input",
			"The request is well-formed but breaks the input rules; see errors.")
		p.Errors = ve.Errors
		return p, nil, false
	}
	if errors.Is(err, prediction.ErrModelNotFound) || errors.Is(err, modelreg.ErrNotFound) {
		p = newP(http.StatusNotFound, slugModelNotFound, "Model version not found",
			"The requested model version or alias is not registered.")
		p.Errors = []validate.FieldError{{Field: "model_version", Message: "is not a registered version or alias"}}
		return p, nil, false
	}
	if errors.Is(err, prediction.ErrNoModels) {
		p = newP(http.StatusServiceUnavailable, slugUnavailable, "No model loaded",
			"No model is loaded yet; retry shortly.")
		return p, retryAfter(retryAfterNoModels), false
	}
	if de, ok := errors.AsType[*job.DecodeError](err); ok {
		return newP(http.StatusBadRequest, slugMalformed, "Malformed request",
			"The request body is not valid JSON: "+de.Err.Error()), nil, false
	}
	if qe, ok := errors.AsType[*job.QuotaError](err); ok {
		p = newP(http.StatusTooManyRequests, slugQuotaExceeded, "Quota exceeded", quotaDetail(qe))
		p.Quota, p.Limit, p.Current, p.Requested = qe.Quota, &qe.Limit, &qe.Current, &qe.Requested
		return p, retryAfter(qe.RetryAfter), false
	}
	if errors.Is(err, job.ErrNotFound) {
		return newP(http.StatusNotFound, slugJobNotFound, "Job not found",
			"No job with this id belongs to the API key."), nil, false
	}
	if errors.Is(err, job.ErrNotFinished) {
		return newP(http.StatusConflict, slugConflict, "Job not finished",
			"Only a finished job can be replayed; this one is "+lastWord(err.Error())+". Retry once it ends."), nil, false
	}
	if errors.Is(err, job.ErrInputsGone) {
		return newP(http.StatusConflict, slugInputsGone, "Job inputs gone",
			"The job's inputs are no longer stored (it finished before inputs were kept), so it cannot be replayed; submit its rows again."), nil, false
	}
	if errors.Is(err, job.ErrNotReplay) {
		return newP(http.StatusConflict, slugConflict, "Not a replay",
			"The job is not a replay of another job (POST /api/v1/jobs/{id}/replay makes one), so there is nothing to compare it with."), nil, false
	}
	if errors.Is(err, job.ErrConflict) {
		return newP(http.StatusConflict, slugConflict, "Conflict", "The job is already finished: "+
			strings.TrimPrefix(err.Error(), job.ErrConflict.Error()+": ")+"."), nil, false
	}
	if errors.Is(err, job.ErrTooLarge) {
		p = tooLarge()
		p.Detail = "The job has more rows than the server accepts (" + strings.TrimPrefix(err.Error(), job.ErrTooLarge.Error()+": ") + ")."
		return p, nil, false
	}
	if errors.Is(err, job.ErrBadCursor) {
		p = newP(http.StatusUnprocessableEntity, slugValidation, "Invalid input", "The cursor was not made by this listing.")
		p.Errors = []validate.FieldError{{Field: "cursor", Message: "is not a cursor of this listing"}}
		return p, nil, false
	}
	if errors.Is(err, idempotency.ErrInFlight) {
		return newP(http.StatusConflict, slugConflict, "Request in flight",
			"A request with this Idempotency-Key is still being processed; retry when it has finished."), retryAfter(time.Second), false
	}
	if errors.Is(err, idempotency.ErrMismatch) {
		p = newP(http.StatusUnprocessableEntity, slugValidation, "Idempotency-Key reused",
			"This Idempotency-Key was used with another request; use a new key for a new request.")
		p.Errors = []validate.FieldError{{Field: "Idempotency-Key", Message: "was used with another request body"}}
		return p, nil, false
	}
	if errors.Is(err, job.ErrUnavailable) || errors.Is(err, prediction.ErrUnavailable) || errors.Is(err, auth.ErrUnavailable) ||
		postgres.IsUnavailable(err) {
		return newP(http.StatusServiceUnavailable, slugUnavailable, "Service unavailable",
			"A store the request needs cannot be reached; nothing was recorded. Retry shortly."), retryAfter(retryAfterUnavailable), false
	}
	if errors.Is(err, auth.ErrUnauthorized) {
		p = newP(http.StatusUnauthorized, slugUnauthorized, "Unauthorized",
			"A valid API key is required: Authorization: Bearer <key> or X-API-Key: <key>.")
		return p, http.Header{"Www-Authenticate": {`Bearer realm="predq"`}}, false
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return tooLarge(), nil, false
	}
	if he, ok := errors.AsType[*echo.HTTPError](err); ok {
		switch he.Code {
		case http.StatusNotFound:
			return newP(http.StatusNotFound, slugNotFound, "Not found", "No resource at this path."), nil, false
		case http.StatusMethodNotAllowed:
			// The router has already set the Allow header on the response.
			return newP(http.StatusMethodNotAllowed, slugMethodNotAllowed, "Method not allowed",
				"This path does not support the method; see the Allow header."), nil, false
		case http.StatusRequestEntityTooLarge:
			return tooLarge(), nil, false
		case http.StatusUnsupportedMediaType:
			return unsupportedMediaType(), nil, false
		case http.StatusUnauthorized:
			return problemFor(auth.ErrUnauthorized)
		}
		if he.Code >= 400 && he.Code < 500 {
			return newP(he.Code, "", "", ""), nil, false
		}
	}
	return newP(http.StatusInternalServerError, slugInternal, "Internal server error",
		"The server failed to answer; the request id identifies it in the logs."), nil, true
}

// lastWord returns the last space-separated word of s.
func lastWord(s string) string {
	return s[strings.LastIndexByte(s, ' ')+1:]
}

// quotaDetail explains a quota refusal.
func quotaDetail(qe *job.QuotaError) string {
	if qe.Quota == job.QuotaQueuedJobs {
		return fmt.Sprintf("The API key has %d active (queued or running) jobs; its limit is %d. Retry once one ends.", qe.Current, qe.Limit)
	}
	if qe.Requested == 0 {
		return fmt.Sprintf("The API key has %d rows pending across its active jobs; its limit is %d.", qe.Current, qe.Limit)
	}
	return fmt.Sprintf("The API key has %d rows pending across its active jobs (its limit is %d); this job adds %d. Nothing was stored.",
		qe.Current, qe.Limit, qe.Requested)
}

func tooLarge() Problem {
	return Problem{Type: problemTypeBase + slugTooLarge, Title: "Payload too large", Status: http.StatusRequestEntityTooLarge,
		Detail: "The request body is larger than the server accepts."}
}

func unsupportedMediaType() Problem {
	return Problem{Type: problemTypeBase + slugMediaType, Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType,
		Detail: "The request body must be JSON: Content-Type: application/json."}
}

// retryAfter returns a Retry-After header of d, rounded up to whole seconds (at least 1).
func retryAfter(d time.Duration) http.Header {
	secs := max(1, int64(math.Ceil(d.Seconds())))
	return http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
}

// handleError is Echo's HTTPErrorHandler: it writes err as a problem+json response and logs
// server faults once, with the request id.
func (s *Server) handleError(err error, c echo.Context) {
	if isOIPPath(c.Request().URL.Path) {
		s.writeOIPError(err, c)
		return
	}
	req := c.Request()
	ctx := req.Context()
	id := requestIDFrom(ctx)
	p, header, serverFault := problemFor(err)
	if serverFault {
		level := slog.LevelError
		if errors.Is(err, context.Canceled) {
			level = slog.LevelWarn // the client went away; nothing to fix on our side
		}
		attrs := []any{"error", err.Error(), "status", p.Status, "method", req.Method,
			"path", req.URL.Path, "request_id", id}
		if pe, ok := errors.AsType[*panicError](err); ok {
			attrs = append(attrs, "stack", pe.stack)
		}
		s.log.Log(ctx, level, "request failed", attrs...)
	}
	if c.Response().Committed {
		return // the handler already wrote a response; nothing more can be said
	}
	if len(p.Errors) > maxProblemErrors {
		p.Detail += fmt.Sprintf(" Showing the first %d of %d field errors.", maxProblemErrors, len(p.Errors))
		p.Errors = p.Errors[:maxProblemErrors]
	}
	p.Instance = req.URL.Path
	p.RequestID = id
	for k, vs := range header {
		c.Response().Header()[k] = vs
	}
	body, mErr := json.Marshal(p)
	if mErr != nil {
		s.log.ErrorContext(ctx, "encode problem", "error", mErr.Error(), "request_id", id)
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500}`)
		p.Status = http.StatusInternalServerError
	}
	if wErr := c.Blob(p.Status, "application/problem+json", body); wErr != nil {
		s.log.DebugContext(ctx, "write problem", "error", wErr.Error(), "request_id", id)
	}
}
