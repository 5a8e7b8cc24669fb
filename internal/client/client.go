// Package client is a typed Go client of predq's HTTP API (/api/v1 and the health routes),
// used by the predq command. It speaks HTTP only: it imports nothing of the server.
//
// Every method returns a *Problem when the server answers with an error status (its
// problem+json body decoded when there is one), and an error wrapping ErrUnreachable when no
// answer came back at all (connection refused, DNS failure, a dropped connection).
package client

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrUnreachable is wrapped by the errors of requests that got no answer from the server.
var ErrUnreachable = errors.New("server unreachable")

// FieldError is one field problem of a problem+json answer.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an error answer of the server (RFC 9457 problem+json where the server sent one).
type Problem struct {
	Status    int          `json:"status"`
	Type      string       `json:"type,omitempty"`
	Title     string       `json:"title"`
	Detail    string       `json:"detail,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []FieldError `json:"errors,omitempty"`
}

func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(cmp.Or(p.Title, http.StatusText(p.Status), "error"))
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	for _, fe := range p.Errors {
		b.WriteString("\n  " + fe.Field + ": " + fe.Message)
	}
	return b.String()
}

// Auth reports whether the problem is an authentication or authorization failure (401, 403).
func (p *Problem) Auth() bool {
	return p.Status == http.StatusUnauthorized || p.Status == http.StatusForbidden
}

// Client talks to one predq server with one API key.
type Client struct {
	base   string
	key    string
	http   *http.Client
	agent  string
	rqWait time.Duration
}

// Config holds what a Client needs.
type Config struct {
	// BaseURL is the server's root, e.g. http://127.0.0.1:8080.
	BaseURL string
	// APIKey is sent as a bearer token; it may be empty for the health routes.
	APIKey string
	// UserAgent is sent with every request.
	UserAgent string
	// RequestTimeout bounds the short requests (everything but uploads, downloads and event
	// streams, which are bounded by their context). Default 30 s.
	RequestTimeout time.Duration
}

// New returns a client of the server at cfg.BaseURL.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: the URL %q is not an http(s) URL with a host", cfg.BaseURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 0
	return &Client{
		base:   strings.TrimRight(cfg.BaseURL, "/"),
		key:    cfg.APIKey,
		http:   &http.Client{Transport: tr},
		agent:  cmp.Or(cfg.UserAgent, "predq-client"),
		rqWait: cmp.Or(cfg.RequestTimeout, 30*time.Second),
	}, nil
}

// BaseURL is the server's root URL.
func (c *Client) BaseURL() string { return c.base }

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set("User-Agent", c.agent)
	return req, nil
}

// do sends req and returns the response when its status is 2xx; otherwise the *Problem.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%s %s: %w: %w", req.Method, req.URL.Path, ErrUnreachable, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readProblem(resp)
}

func readProblem(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	p := &Problem{}
	if json.Unmarshal(b, p) != nil || p.Title == "" {
		p = &Problem{Title: http.StatusText(resp.StatusCode), Detail: strings.TrimSpace(string(b))}
		if len(p.Detail) > 300 {
			p.Detail = p.Detail[:300] + "…"
		}
	}
	p.Status = resp.StatusCode
	return p
}

// getJSON sends a short request and decodes its JSON answer into out.
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.rqWait)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encode: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// PredictRequest is the body of POST /api/v1/predict. Nil options are left to the server.
type PredictRequest struct {
	Features            []float64 `json:"features"`
	ModelVersion        *string   `json:"model_version,omitempty"`
	Preprocessing       *string   `json:"preprocessing,omitempty"`
	ConfidenceThreshold *float64  `json:"confidence_threshold,omitempty"`
}

// Prediction is the answer of POST /api/v1/predict.
type Prediction struct {
	Prediction      float64   `json:"prediction"`
	Confidence      float64   `json:"confidence"`
	ModelVersion    string    `json:"model_version"`
	LatencyMS       float64   `json:"latency_ms"`
	Timestamp       time.Time `json:"timestamp"`
	PredictionClass string    `json:"prediction_class"`
	Cached          bool      `json:"cached"`
	RequestID       string    `json:"request_id"`
}

// Predict sends one sample.
func (c *Client) Predict(ctx context.Context, r PredictRequest) (Prediction, error) {
	var p Prediction
	err := c.doJSON(ctx, http.MethodPost, "/api/v1/predict", r, &p)
	return p, err
}

// GetPrediction reads a stored prediction by its request id (GET /api/v1/predictions/{id}).
// The answer is returned as the server sent it.
func (c *Client) GetPrediction(ctx context.Context, id string) (map[string]any, error) {
	var m map[string]any
	err := c.doJSON(ctx, http.MethodGet, "/api/v1/predictions/"+url.PathEscape(id), nil, &m)
	return m, err
}

// Model is an entry of GET /api/v1/models.
type Model struct {
	Version        string                     `json:"version"`
	Kind           string                     `json:"kind"`
	InputSize      int                        `json:"input_size"`
	Preprocessings []string                   `json:"preprocessings"`
	Aliases        []string                   `json:"aliases"`
	Metrics        map[string]json.RawMessage `json:"metrics"`
	Checksum       string                     `json:"checksum"`
	Loaded         bool                       `json:"loaded"`
}

// ListModels lists the registered models.
func (c *Client) ListModels(ctx context.Context) ([]Model, error) {
	var out struct {
		Models []Model `json:"models"`
	}
	err := c.doJSON(ctx, http.MethodGet, "/api/v1/models", nil, &out)
	return out.Models, err
}

// GetModel reads one model by version or alias.
func (c *Client) GetModel(ctx context.Context, version string) (Model, error) {
	var m Model
	err := c.doJSON(ctx, http.MethodGet, "/api/v1/models/"+url.PathEscape(version), nil, &m)
	return m, err
}

// Promote points alias (empty: the server's default, latest) at version.
func (c *Client) Promote(ctx context.Context, version, alias string) (map[string]any, error) {
	path := "/api/v1/models/" + url.PathEscape(version) + "/promote"
	if alias != "" {
		path += "?alias=" + url.QueryEscape(alias)
	}
	var m map[string]any
	err := c.doJSON(ctx, http.MethodPost, path, nil, &m)
	return m, err
}

// Health reads GET /health/ready: the server's readiness report and whether it is ready (200).
func (c *Client) Health(ctx context.Context) (map[string]any, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.rqWait)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, "/health/ready", nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("GET /health/ready: %w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &m) != nil {
		m = map[string]any{"body": strings.TrimSpace(string(b))}
	}
	return m, resp.StatusCode == http.StatusOK, nil
}

// Webhook is the delivery state of a job's webhook.
type Webhook struct {
	URL        string `json:"url"`
	Status     string `json:"status"`
	Attempts   int    `json:"attempts"`
	LastStatus *int   `json:"last_status,omitempty"`
	LastError  string `json:"last_error,omitempty"`
}

// Job is a batch job as the API shows it.
type Job struct {
	ID                  string            `json:"id"`
	Status              string            `json:"status"`
	ModelVersion        string            `json:"model_version"`
	Preprocessing       string            `json:"preprocessing"`
	ConfidenceThreshold float64           `json:"confidence_threshold"`
	Total               int               `json:"total"`
	Processed           int               `json:"processed"`
	Failed              int               `json:"failed"`
	LowConfidence       int               `json:"low_confidence"`
	Progress            float64           `json:"progress"`
	InputFormat         string            `json:"input_format"`
	CreatedAt           time.Time         `json:"created_at"`
	StartedAt           *time.Time        `json:"started_at"`
	FinishedAt          *time.Time        `json:"finished_at"`
	Error               *string           `json:"error"`
	Webhook             *Webhook          `json:"webhook"`
	Metadata            map[string]string `json:"metadata"`
}

// The statuses of a job.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Terminal reports whether a job in this status can change no more.
func Terminal(status string) bool {
	return status == StatusSucceeded || status == StatusFailed || status == StatusCancelled
}

// Done is the number of rows the job has finished (processed or failed).
func (j Job) Done() int { return j.Processed + j.Failed }

// Result is one row's answer of GET /api/v1/jobs/{id}/results.
type Result struct {
	Index           int      `json:"index"`
	Prediction      *float64 `json:"prediction"`
	Confidence      *float64 `json:"confidence"`
	PredictionClass string   `json:"prediction_class,omitempty"`
	LowConfidence   bool     `json:"low_confidence"`
	ModelVersion    string   `json:"model_version"`
	Error           string   `json:"error,omitempty"`
}

// The submission formats (Content-Types) of a job upload.
const (
	FormatCSV    = "text/csv"
	FormatNDJSON = "application/x-ndjson"
	FormatJSON   = "application/json"
)

// SubmitOptions are the options of a job submission. For a JSON body the options are
// members of the body: only IdempotencyKey applies.
type SubmitOptions struct {
	ModelVersion        string
	Preprocessing       string
	ConfidenceThreshold *float64
	WebhookURL          string
	Metadata            map[string]string
	// IdempotencyKey, when set, makes a repeated submission return the first one's job.
	IdempotencyKey string
}

// Query is the query string of an NDJSON or CSV submission with these options.
func (o SubmitOptions) Query() url.Values {
	q := url.Values{}
	if o.ModelVersion != "" {
		q.Set("model_version", o.ModelVersion)
	}
	if o.Preprocessing != "" {
		q.Set("preprocessing", o.Preprocessing)
	}
	if o.ConfidenceThreshold != nil {
		q.Set("confidence_threshold", strconv.FormatFloat(*o.ConfidenceThreshold, 'g', -1, 64))
	}
	if o.WebhookURL != "" {
		q.Set("webhook_url", o.WebhookURL)
	}
	for k, v := range o.Metadata {
		q.Add("metadata", k+"="+v)
	}
	return q
}

// Submission is the answer of a job upload.
type Submission struct {
	Job Job
	// Replayed is true when the server answered an earlier submission's job again
	// (Idempotent-Replayed: the same Idempotency-Key and body).
	Replayed bool
}

// SubmitJob streams body (in format, one of the Format constants) to POST /api/v1/jobs. The
// body is sent as it is read, so memory stays constant whatever its size; the request is
// bounded by ctx only.
func (c *Client) SubmitJob(ctx context.Context, format string, body io.Reader, o SubmitOptions) (Submission, error) {
	path := "/api/v1/jobs"
	if q := o.Query(); format != FormatJSON && len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := c.newRequest(ctx, http.MethodPost, path, io.NopCloser(body)) // NopCloser: no length, chunked
	if err != nil {
		return Submission{}, err
	}
	req.Header.Set("Content-Type", format)
	req.Header.Set("Accept", "application/json")
	if o.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", o.IdempotencyKey)
	}
	resp, err := c.do(req)
	if err != nil {
		return Submission{}, err
	}
	defer resp.Body.Close()
	var s Submission
	if err := json.NewDecoder(resp.Body).Decode(&s.Job); err != nil {
		return Submission{}, fmt.Errorf("POST /api/v1/jobs: decode the answer: %w", err)
	}
	s.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return s, nil
}

// GetJob reads a job.
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.doJSON(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

// CancelJob cancels a queued or running job; a terminal job's cancel is a 409 *Problem.
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.doJSON(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, &j)
	return j, err
}

// ListFilter selects the jobs of ListJobs.
type ListFilter struct {
	Status string
	Limit  int
	Cursor string
}

// ListJobs lists the caller's jobs, newest first, a page at a time; the second result is the
// cursor of the next page ("" after the last).
func (c *Client) ListJobs(ctx context.Context, f ListFilter) ([]Job, string, error) {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	path := "/api/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Jobs       []Job  `json:"jobs"`
		NextCursor string `json:"next_cursor"`
	}
	err := c.doJSON(ctx, http.MethodGet, path, nil, &out)
	return out.Jobs, out.NextCursor, err
}

// Results streams every result of a job, in input order, in format (FormatCSV or
// FormatNDJSON). The caller closes the reader; a body cut short by the server ends with an
// error other than io.EOF only when the connection fails, so a caller that needs every row
// counts them.
func (c *Client) Results(ctx context.Context, id, format string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id)+"/results", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", format)
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Event is one Server-Sent Event of a job's event stream.
type Event struct {
	// Name is "progress" or "status" (the last one, for a terminal job).
	Name string
	ID   string
	Job  Job
}

// FollowOptions tune FollowJob.
type FollowOptions struct {
	// LastEventID resumes a stream after this event id.
	LastEventID string
	// Reconnects bounds the reconnections after a stream that dropped; default 30.
	Reconnects int
	// OnReconnect is told of each reconnection and the error that caused it.
	OnReconnect func(attempt int, err error)
}

// FollowJob reads the job's event stream (GET /api/v1/jobs/{id}/events), calling fn for each
// event, until the job is terminal; it returns the terminal job. A stream that drops or ends
// early is reopened with Last-Event-ID (after the server's retry interval), so no event is
// repeated; an error answer (a *Problem) ends it.
func (c *Client) FollowJob(ctx context.Context, id string, o FollowOptions, fn func(Event)) (Job, error) {
	lastID := o.LastEventID
	retry := time.Second
	maxTries := cmp.Or(o.Reconnects, 30)
	var last Job
	for attempt := 0; ; attempt++ {
		j, terminal, err := c.followOnce(ctx, id, &lastID, &retry, fn)
		if j.ID != "" {
			last = j
		}
		if terminal {
			return last, nil
		}
		var p *Problem
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
		if errors.As(err, &p) {
			return last, err
		}
		if err == nil {
			err = errors.New("the event stream ended before the job did")
		}
		if attempt >= maxTries {
			return last, fmt.Errorf("job %s events: %w", id, err)
		}
		if o.OnReconnect != nil {
			o.OnReconnect(attempt+1, err)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(retry):
		}
	}
}

// followOnce reads one connection of the event stream.
func (c *Client) followOnce(ctx context.Context, id string, lastID *string, retry *time.Duration, fn func(Event)) (Job, bool, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return Job{}, false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := c.do(req)
	if err != nil {
		return Job{}, false, err
	}
	defer resp.Body.Close()
	var last Job
	var ev Event
	var data []byte
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) > 0 {
				if err := json.Unmarshal(data, &ev.Job); err != nil {
					return last, false, fmt.Errorf("job %s events: decode: %w", id, err)
				}
				if ev.ID != "" {
					*lastID = ev.ID
				}
				last = ev.Job
				fn(ev)
				if ev.Name == "status" || Terminal(ev.Job.Status) {
					return last, true, nil
				}
			}
			ev, data = Event{}, data[:0]
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Name = value
		case "id":
			ev.ID = value
		case "data":
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, value...)
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && n > 0 {
				*retry = time.Duration(n) * time.Millisecond
			}
		}
	}
	err = sc.Err()
	if err != nil && ctx.Err() == nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
	}
	return last, false, err
}
