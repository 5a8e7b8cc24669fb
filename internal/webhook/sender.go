package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// DefaultTimeout bounds one delivery attempt (connect, redirects, response and body).
const DefaultTimeout = 10 * time.Second

// DefaultUserAgent is the User-Agent of webhook requests.
const DefaultUserAgent = "predq-webhooks/1"

// maxResponseBody is how much of a response body is read (and discarded) before the
// connection is closed.
const maxResponseBody = 64 << 10

// Outcome is the classification of one delivery attempt.
type Outcome string

// Outcomes of an attempt; they are also the values of the outcome label of the metrics.
const (
	// OutcomeDelivered: the receiver answered 2xx.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeRetry: a network error, a timeout, 408, 429 or 5xx; worth another attempt.
	OutcomeRetry Outcome = "retry"
	// OutcomeFailed: a permanent failure (see Sender.Send), or a retryable failure on the
	// last allowed attempt (Deliverer.Deliver with final).
	OutcomeFailed Outcome = "failed"
)

// Result is the outcome of one attempt.
type Result struct {
	Outcome    Outcome
	StatusCode int           // HTTP status of the final response; 0 when there was none
	Err        error         // nil when delivered; else why not (matches ErrForbiddenURL when refused by the SSRF guard)
	At         time.Time     // when the attempt started (its webhook-timestamp)
	Duration   time.Duration // how long it took
	RetryAfter time.Duration // the receiver's Retry-After on a retryable answer (capped at BackoffMax); 0 when none
}

// SenderConfig holds a Sender's settings and collaborators.
type SenderConfig struct {
	// Secret signs the requests: "whsec_" followed by the base64 of 24 to 64 random bytes
	// (WEBHOOK_SECRET). Required.
	Secret string
	// AllowPrivate lifts the SSRF address checks (WEBHOOK_ALLOW_PRIVATE; tests and local
	// development only).
	AllowPrivate bool
	// Timeout bounds one attempt; default DefaultTimeout.
	Timeout time.Duration
	// Logger receives a debug line per attempt; default: discarded.
	Logger *slog.Logger
	// Registerer receives webhook_deliveries_total{outcome} and
	// webhook_delivery_duration_seconds{outcome}; nil: the metrics are not registered.
	Registerer prometheus.Registerer
	// Now is the clock of the webhook-timestamp header; default time.Now.
	Now func() time.Time
	// Resolver looks up host names for the SSRF guard; default net.DefaultResolver.
	Resolver Resolver
	// UserAgent is the User-Agent header; default DefaultUserAgent.
	UserAgent string
}

// Sender makes single, signed delivery attempts through an SSRF-guarded HTTP client. It is
// safe for concurrent use.
type Sender struct {
	wh        *standardwebhooks.Webhook
	client    *http.Client
	guard     *guard
	timeout   time.Duration
	userAgent string
	now       func() time.Time
	logger    *slog.Logger
	metrics   senderMetrics
}

type senderMetrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewSender validates cfg, fills its defaults and returns a Sender. It fails when the secret
// is missing or malformed, or when the metrics cannot be registered on cfg.Registerer (e.g.
// registered twice).
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Secret == "" {
		return nil, errors.New("webhook sender: secret is required (whsec_<base64>)")
	}
	if !strings.HasPrefix(cfg.Secret, "whsec_") {
		return nil, errors.New("webhook sender: secret must start with whsec_")
	}
	wh, err := standardwebhooks.NewWebhook(cfg.Secret)
	if err != nil {
		return nil, errors.New("webhook sender: secret is not whsec_ followed by base64")
	}
	if n := secretLen(cfg.Secret); n < 24 || n > 64 {
		return nil, fmt.Errorf("webhook sender: secret key is %d bytes; the specification asks for 24 to 64", n)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("webhook sender: negative timeout %s", cfg.Timeout)
	}
	s := &Sender{
		wh:        wh,
		timeout:   cmp.Or(cfg.Timeout, DefaultTimeout),
		userAgent: cmp.Or(cfg.UserAgent, DefaultUserAgent),
		now:       cfg.Now,
		logger:    cfg.Logger,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.guard = newGuard(cfg.AllowPrivate, cfg.Resolver, s.timeout)
	s.client = s.guard.client(s.timeout)
	s.metrics = senderMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered, retry (will be retried), failed (permanent failure or last attempt).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "webhook_delivery_duration_seconds",
			Help:    "Duration of webhook delivery attempts, by outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"outcome"}),
	}
	for _, o := range []Outcome{OutcomeDelivered, OutcomeRetry, OutcomeFailed} {
		s.metrics.deliveries.WithLabelValues(string(o))
		s.metrics.duration.WithLabelValues(string(o))
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.metrics.deliveries, s.metrics.duration} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webhook sender: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

func secretLen(secret string) int {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return 0
	}
	return len(b)
}

// Send makes ONE delivery attempt of d: a POST of d.Payload to d.URL with the Standard
// Webhooks headers (webhook-id = d.ID, the same on every attempt; webhook-timestamp = now;
// webhook-signature), Content-Type application/json and the User-Agent. At most 64 KiB of the
// response body is read, then discarded. The Result classifies the attempt:
//   - 2xx: OutcomeDelivered;
//   - a network error, a timeout, 408 Request Timeout, 429 Too Many Requests or any 5xx:
//     OutcomeRetry (RetryAfter carries the receiver's Retry-After, if any);
//   - 410 Gone: OutcomeFailed (the receiver says the endpoint is gone: stop);
//   - any other 4xx: OutcomeFailed. A request the receiver rejects (bad signature, unknown
//     path, auth) will be rejected again: retrying for hours only delays the failure the job
//     object should show, and the delivery can be driven again by hand;
//   - 3xx other than 307/308, and more than MaxRedirects redirects: OutcomeFailed (a 301/302/
//     303 would turn the POST into a GET without body; the URL should be the final one);
//   - a URL refused by the SSRF guard (shape, dialled address, redirect target):
//     OutcomeFailed, with Err matching ErrForbiddenURL.
//
// ctx bounds the attempt as well as the Sender's timeout.
func (s *Sender) Send(ctx context.Context, d Delivery) Result {
	return s.send(ctx, d, false, nil)
}

// SendWithHeader is Send with extra request headers (e.g. an Idempotency-Key for a receiver
// that dedupes by it); they cannot replace the signature headers, Content-Type or
// User-Agent. It serves messages that are not stored deliveries, such as the worker's
// low-confidence alerts: the same signing, SSRF guard and classification.
func (s *Sender) SendWithHeader(ctx context.Context, d Delivery, h http.Header) Result {
	return s.send(ctx, d, false, h)
}

// send is Send; with final, a retryable outcome becomes OutcomeFailed (no attempt is left).
func (s *Sender) send(ctx context.Context, d Delivery, final bool, extra http.Header) Result {
	at := s.now()
	start := time.Now()
	res := s.attempt(ctx, d, at, extra)
	res.At = at
	res.Duration = time.Since(start)
	if final && res.Outcome == OutcomeRetry {
		res.Outcome = OutcomeFailed
		res.Err = fmt.Errorf("%w (last attempt, giving up)", res.Err)
	}
	s.metrics.deliveries.WithLabelValues(string(res.Outcome)).Inc()
	s.metrics.duration.WithLabelValues(string(res.Outcome)).Observe(res.Duration.Seconds())
	attrs := []any{"delivery_id", d.ID, "outcome", res.Outcome, "status_code", res.StatusCode, "duration_ms", res.Duration.Milliseconds()}
	if res.Err != nil {
		attrs = append(attrs, "error", res.Err.Error())
	}
	s.logger.DebugContext(ctx, "webhook attempt", attrs...)
	return res
}

func (s *Sender) attempt(ctx context.Context, d Delivery, at time.Time, extra http.Header) Result {
	if _, err := parseURL(d.URL); err != nil {
		return Result{Outcome: OutcomeFailed, Err: err}
	}
	id := d.ID.String()
	sig, err := s.wh.Sign(id, at, d.Payload)
	if err != nil {
		return Result{Outcome: OutcomeFailed, Err: fmt.Errorf("sign: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return Result{Outcome: OutcomeFailed, Err: &URLError{Reason: "not a valid URL", Err: err}}
	}
	for k, vs := range extra {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)

	resp, err := s.client.Do(req)
	if err != nil {
		return s.classifyError(ctx, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
	return classifyStatus(resp, s.now())
}

func (s *Sender) classifyError(ctx context.Context, err error) Result {
	// *url.Error's message repeats the URL, which may carry a token: keep only the cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var netErr net.Error
	switch {
	case errors.Is(err, ErrForbiddenURL):
		return Result{Outcome: OutcomeFailed, Err: err}
	case errors.Is(err, errNotFollowed):
		return Result{Outcome: OutcomeFailed, Err: err}
	case ctx.Err() != nil:
		return Result{Outcome: OutcomeRetry, Err: fmt.Errorf("attempt interrupted: %w", context.Cause(ctx))}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return Result{Outcome: OutcomeRetry, Err: fmt.Errorf("timeout after %s: %w", s.timeout, err)}
	default:
		return Result{Outcome: OutcomeRetry, Err: err}
	}
}

func classifyStatus(resp *http.Response, now time.Time) Result {
	code := resp.StatusCode
	r := Result{StatusCode: code}
	switch {
	case code >= 200 && code < 300:
		r.Outcome = OutcomeDelivered
		return r
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		r.Outcome = OutcomeRetry
		r.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	case code >= 300 && code < 400:
		r.Outcome = OutcomeFailed
		r.Err = fmt.Errorf("%w: receiver answered %d; only 307 and 308 are followed, configure the final URL", errNotFollowed, code)
		return r
	default:
		r.Outcome = OutcomeFailed
	}
	r.Err = fmt.Errorf("receiver answered %d %s", code, http.StatusText(code))
	return r
}

// parseRetryAfter reads a Retry-After header (delay-seconds or an HTTP date), capped at
// BackoffMax; 0 when absent or unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(BackoffMax/time.Second) {
			return BackoffMax
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), BackoffMax)
}
