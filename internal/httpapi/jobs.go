package httpapi

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// JobService is the batch-job feature as the handlers use it (internal/job.Service).
type JobService interface {
	Submit(ctx context.Context, owner job.Owner, opts job.Options, format string, src job.RowSource, lateOpts func() (job.Options, error)) (job.Job, error)
	Get(ctx context.Context, owner job.Owner, id uuid.UUID) (job.Job, error)
	List(ctx context.Context, owner job.Owner, f job.ListFilter) ([]job.Job, string, error)
	Results(ctx context.Context, owner job.Owner, id uuid.UUID, after, limit int) ([]job.Result, int, error)
	StreamResults(ctx context.Context, owner job.Owner, id uuid.UUID, fn func(job.Result) error) error
	Cancel(ctx context.Context, owner job.Owner, id uuid.UUID) (job.Job, error)
}

// Limits of the job routes.
const (
	// DefaultJobBodyLimit bounds a job upload's bytes; MAX_JOB_ROWS bounds its rows.
	DefaultJobBodyLimit int64 = 8 << 30
	// jobUploadTimeout replaces the server's ReadTimeout for a job upload.
	jobUploadTimeout = time.Hour
	// The default and largest pages of the job list and of a job's results.
	defaultJobsPage, maxJobsPage       = 20, 100
	defaultResultsPage, maxResultsPage = 1000, 10_000
	// eventPoll is how often an event stream looks at its job.
	eventPoll = 250 * time.Millisecond
	// eventKeepAlive is how often an idle event stream sends a comment.
	eventKeepAlive = 15 * time.Second
)

var (
	slugJobNotFound = "job-not-found"
	slugConflict    = "conflict"
)

// ownerOf is the job owner of the request: its tenant (see tenantOf), with the key's name
// as a label, and its weight in the fair share and its quotas.
func ownerOf(c echo.Context) job.Owner {
	p, _ := principalFrom(c.Request().Context())
	return job.Owner{ID: p.KeyID, Name: p.Name, Weight: p.Weight, MaxPendingRows: p.MaxPendingRows, MaxQueuedJobs: p.MaxQueuedJobs}
}

func jobID(c echo.Context) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return uuid.Nil, job.ErrNotFound
	}
	return id, nil
}

// jobFormat maps a Content-Type to a submission format.
func jobFormat(ct string) (string, bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return "", false
	}
	switch mt {
	case "application/json":
		return job.FormatJSON, true
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		return job.FormatNDJSON, true
	case "text/csv":
		return job.FormatCSV, true
	}
	return "", false
}

// queryOptions reads the job options of an NDJSON or CSV submission from the query string.
func queryOptions(c echo.Context) (job.Options, error) {
	q := c.QueryParams()
	v := &validate.Error{}
	o := job.Options{ConfidenceThreshold: prediction.DefaultThreshold}
	for name := range q {
		switch name {
		case "model_version", "preprocessing", "confidence_threshold", "webhook_url", "metadata", "priority":
		default:
			v.Add(name, "is not a known query parameter")
		}
	}
	o.ModelVersion = q.Get("model_version")
	o.Preprocessing = q.Get("preprocessing")
	o.WebhookURL = strings.TrimSpace(q.Get("webhook_url"))
	o.Priority = strings.TrimSpace(q.Get("priority"))
	if s := q.Get("confidence_threshold"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			v.Add("confidence_threshold", "must be a number, got %q", truncateRunes(s, 32))
		} else {
			o.ConfidenceThreshold = f
		}
	}
	for _, kv := range q["metadata"] {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			v.Add("metadata", "must be key=value, got %q", truncateRunes(kv, 64))
			continue
		}
		if o.Metadata == nil {
			o.Metadata = map[string]string{}
		}
		o.Metadata[k] = val
	}
	return o, v.Err()
}

// jsonLateOptions turns the members of a JSON job body into Options once it is read.
func jsonLateOptions(jo *job.JSONOptions) func() (job.Options, error) {
	return func() (job.Options, error) {
		if !jo.SawSamples {
			return job.Options{}, validate.Field("samples", "is required")
		}
		o := job.Options{ConfidenceThreshold: prediction.DefaultThreshold, Metadata: jo.Metadata}
		if jo.ModelVersion != nil {
			o.ModelVersion = *jo.ModelVersion
		}
		if jo.Preprocessing != nil {
			o.Preprocessing = *jo.Preprocessing
		}
		if jo.ConfidenceThreshold != nil {
			o.ConfidenceThreshold = *jo.ConfidenceThreshold
		}
		if jo.WebhookURL != nil {
			o.WebhookURL = strings.TrimSpace(*jo.WebhookURL)
		}
		if jo.Priority != nil {
			o.Priority = strings.TrimSpace(*jo.Priority)
		}
		return o, nil
	}
}

// jobUpload prepares the streamed body of a job upload for the route's other middleware
// (idempotent reads it to the end on a replay) and its handler: its own byte limit, and
// deadlines long enough for a large upload instead of the server's ReadTimeout.
func (s *Server) jobUpload(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		rc := http.NewResponseController(c.Response())
		_ = rc.SetReadDeadline(time.Now().Add(jobUploadTimeout))
		_ = rc.SetWriteDeadline(time.Now().Add(jobUploadTimeout + time.Minute))
		req.Body = http.MaxBytesReader(c.Response(), req.Body, s.cfg.JobBodyLimit)
		return next(c)
	}
}

// handleSubmitJob answers POST /api/v1/jobs: the body (JSON, NDJSON or CSV) is streamed into
// the job store, then 202 with the job object and its Location. Its route runs it inside
// jobUpload and idempotent.
func (s *Server) handleSubmitJob() echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		format, ok := jobFormat(req.Header.Get(echo.HeaderContentType))
		if !ok {
			return &problemError{status: http.StatusUnsupportedMediaType, slug: slugMediaType, title: "Unsupported media type",
				detail: "A job body must be application/json, application/x-ndjson or text/csv."}
		}
		j, err := s.submit(c, format, req.Body)
		if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/jobs/"+j.ID.String())
		return c.JSON(http.StatusAccepted, j)
	}
}

func (s *Server) submit(c echo.Context, format string, body io.Reader) (job.Job, error) {
	ctx := c.Request().Context()
	owner := ownerOf(c)
	switch format {
	case job.FormatJSON:
		if len(c.QueryParams()) > 0 {
			return job.Job{}, validate.Field("query", "a JSON body carries its options in the body, not the query string")
		}
		var jo job.JSONOptions
		return s.deps.Jobs.Submit(ctx, owner, job.Options{}, format, job.NewJSONSource(body, &jo), jsonLateOptions(&jo))
	case job.FormatNDJSON:
		o, err := queryOptions(c)
		if err != nil {
			return job.Job{}, err
		}
		return s.deps.Jobs.Submit(ctx, owner, o, format, job.NewNDJSONSource(body), nil)
	default:
		o, err := queryOptions(c)
		if err != nil {
			return job.Job{}, err
		}
		return s.deps.Jobs.Submit(ctx, owner, o, format, job.NewCSVSource(body), nil)
	}
}

// jobList is the answer of GET /api/v1/jobs.
type jobList struct {
	Jobs       []job.Job `json:"jobs"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

func queryLimit(c echo.Context, def, maxLimit int) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, validate.Field("limit", "must be a whole number from 1 to %d", maxLimit)
	}
	return n, nil
}

// handleListJobs answers GET /api/v1/jobs: the caller's jobs, newest first.
func (s *Server) handleListJobs() echo.HandlerFunc {
	return func(c echo.Context) error {
		limit, err := queryLimit(c, defaultJobsPage, maxJobsPage)
		if err != nil {
			return err
		}
		status := c.QueryParam("status")
		if status != "" && !job.ValidStatus(status) {
			return validate.Field("status", "must be one of queued, running, succeeded, failed, cancelled")
		}
		jobs, next, err := s.deps.Jobs.List(c.Request().Context(), ownerOf(c), job.ListFilter{Status: status, Limit: limit, Cursor: c.QueryParam("cursor")})
		if err != nil {
			return err
		}
		if jobs == nil {
			jobs = []job.Job{}
		}
		return c.JSON(http.StatusOK, jobList{Jobs: jobs, NextCursor: next})
	}
}

// handleGetJob answers GET /api/v1/jobs/{id}.
func (s *Server) handleGetJob() echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		j, err := s.deps.Jobs.Get(c.Request().Context(), ownerOf(c), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, j)
	}
}

// handleCancelJob answers POST /api/v1/jobs/{id}/cancel.
func (s *Server) handleCancelJob() echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		j, err := s.deps.Jobs.Cancel(c.Request().Context(), ownerOf(c), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, j)
	}
}

// resultPage is the JSON answer of GET /api/v1/jobs/{id}/results.
type resultPage struct {
	Results    []job.Result `json:"results"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

func encodeIndexCursor(i int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("i:" + strconv.Itoa(i)))
}

func decodeIndexCursor(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil && strings.HasPrefix(string(b), "i:") {
		if n, err := strconv.Atoi(string(b[2:])); err == nil && n >= 0 {
			return n, nil
		}
	}
	return 0, validate.Field("cursor", "is not a cursor of this listing")
}

// handleJobResults answers GET /api/v1/jobs/{id}/results: a page of results in item order,
// or, with Accept: application/x-ndjson or text/csv, all of them streamed.
func (s *Server) handleJobResults() echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		owner := ownerOf(c)
		accept := c.Request().Header.Get(echo.HeaderAccept)
		switch {
		case strings.Contains(accept, "application/x-ndjson"):
			return s.streamResults(c, owner, id, "application/x-ndjson", func(w *bufio.Writer, r job.Result) error {
				b, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
				return w.WriteByte('\n')
			}, nil)
		case strings.Contains(accept, "text/csv"):
			return s.streamResults(c, owner, id, "text/csv; charset=utf-8", func(w *bufio.Writer, r job.Result) error {
				fmt.Fprintf(w, "%d,%s,%s,%s,%t,%s,%s\n", r.Index, optFloat(r.Prediction), optFloat(r.Confidence),
					r.PredictionClass, r.LowConfidence, r.ModelVersion, csvQuote(r.Error))
				return nil
			}, []byte("index,prediction,confidence,prediction_class,low_confidence,model_version,error\n"))
		}
		limit, err := queryLimit(c, defaultResultsPage, maxResultsPage)
		if err != nil {
			return err
		}
		after, err := decodeIndexCursor(c.QueryParam("cursor"))
		if err != nil {
			return err
		}
		results, next, err := s.deps.Jobs.Results(ctx, owner, id, after, limit)
		if err != nil {
			return err
		}
		page := resultPage{Results: results}
		if page.Results == nil {
			page.Results = []job.Result{}
		}
		if next >= 0 {
			page.NextCursor = encodeIndexCursor(next)
		}
		return c.JSON(http.StatusOK, page)
	}
}

func optFloat(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'g', -1, 64)
}

func csvQuote(s string) string {
	if s == "" {
		return ""
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// streamResults writes every result with write, flushing as it goes. The job is looked up
// first so that an unknown job is still a 404 problem.
func (s *Server) streamResults(c echo.Context, owner job.Owner, id uuid.UUID, contentType string, write func(*bufio.Writer, job.Result) error, header []byte) error {
	ctx := c.Request().Context()
	if _, err := s.deps.Jobs.Get(ctx, owner, id); err != nil {
		return err
	}
	rc := http.NewResponseController(c.Response())
	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, contentType)
	resp.WriteHeader(http.StatusOK)
	w := bufio.NewWriterSize(resp, 64<<10)
	_, _ = w.Write(header) // a bufio.Writer keeps its first error: the Flush below reports it
	n := 0
	err := s.deps.Jobs.StreamResults(ctx, owner, id, func(r job.Result) error {
		if n%10_000 == 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		}
		n++
		return write(w, r)
	})
	if err != nil {
		// The status is sent: all we can do is cut the stream short, which the client sees
		// as a truncated body.
		s.log.WarnContext(ctx, "results stream ended early", "job_id", id.String(), "error", err.Error())
		return nil
	}
	return w.Flush()
}

// handleJobEvents answers GET /api/v1/jobs/{id}/events with Server-Sent Events: a
// "progress" event whenever the job's counts or status change (its id is the number of
// items done, so Last-Event-ID resumes without repeats) and a final "status" event, after
// which the stream ends.
func (s *Server) handleJobEvents() echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		owner := ownerOf(c)
		j, err := s.deps.Jobs.Get(ctx, owner, id)
		if err != nil {
			return err
		}
		lastSent := -1
		lastStatus := ""
		if le := c.Request().Header.Get("Last-Event-ID"); le != "" {
			if n, err := strconv.Atoi(le); err == nil {
				lastSent, lastStatus = n, j.Status
			}
		}
		rc := http.NewResponseController(c.Response())
		resp := c.Response()
		h := resp.Header()
		h.Set(echo.HeaderContentType, "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		resp.WriteHeader(http.StatusOK)
		send := func(event string, j job.Job) error {
			b, err := json.Marshal(j)
			if err != nil {
				return err
			}
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(resp, "event: %s\nid: %d\ndata: %s\n\n", event, j.Processed+j.Failed, b); err != nil {
				return err
			}
			return rc.Flush()
		}
		_, _ = fmt.Fprintf(resp, "retry: 1000\n\n")
		ticker := time.NewTicker(eventPoll)
		defer ticker.Stop()
		idle := time.Now()
		for {
			done := j.Processed + j.Failed
			if done != lastSent || j.Status != lastStatus {
				if err := send("progress", j); err != nil {
					return nil
				}
				lastSent, lastStatus, idle = done, j.Status, time.Now()
			}
			if job.Terminal(j.Status) {
				_ = send("status", j)
				return nil
			}
			if time.Since(idle) > eventKeepAlive {
				_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := fmt.Fprint(resp, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
					return nil
				}
				idle = time.Now()
			}
			select {
			case <-ctx.Done():
				return nil
			case <-ticker.C:
			}
			if j, err = s.deps.Jobs.Get(ctx, owner, id); err != nil {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				s.log.WarnContext(ctx, "event stream lost its job", "job_id", id.String(), "error", err.Error())
				return nil
			}
		}
	}
}
