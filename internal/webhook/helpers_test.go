package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/webhook"
)

// testSecret is 24 random bytes, the shortest key the specification allows.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// clock is a settable test clock. It starts at the real time, so that the reference
// library's Verify (which compares webhook-timestamp with time.Now, ±5 min) accepts it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// request is what a receiver got.
type request struct {
	method string
	path   string
	header http.Header
	body   []byte
}

// receiver is a local webhook receiver: each request is recorded, then answered by respond
// (n counts the requests, from 1).
type receiver struct {
	srv  *httptest.Server
	reqs chan request
	hits atomic.Int32
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{reqs: make(chan request, 64)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(rc.hits.Add(1))
		body, _ := io.ReadAll(r.Body)
		rc.reqs <- request{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
		respond(n, w, r)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// status answers every request with code.
func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func (rc *receiver) URL() string { return rc.srv.URL }

func (rc *receiver) addrPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(rc.srv.Listener.Addr().String())
	require.NoError(t, err)
	return ap
}

func (rc *receiver) port(t *testing.T) string {
	t.Helper()
	_, p, err := net.SplitHostPort(rc.srv.Listener.Addr().String())
	require.NoError(t, err)
	return p
}

// next returns the next recorded request; the request was made before Send returned, so it
// is already in the channel.
func (rc *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-rc.reqs:
		return r
	default:
		t.Fatal("receiver got no request")
		return request{}
	}
}

// senderBundle is a Sender with its collaborators.
type senderBundle struct {
	reg   *prometheus.Registry
	clock *clock
}

// newSender returns a Sender with the test secret, a fresh registry and a test clock; cfg
// overrides the rest (AllowPrivate is false unless cfg says otherwise).
func newSender(t *testing.T, cfg webhook.SenderConfig) (*webhook.Sender, senderBundle) {
	t.Helper()
	b := senderBundle{reg: prometheus.NewPedanticRegistry(), clock: newClock()}
	cfg.Secret = testSecret
	cfg.Registerer = b.reg
	if cfg.Now == nil {
		cfg.Now = b.clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := webhook.NewSender(cfg)
	require.NoError(t, err)
	return s, b
}

// counter reads webhook_deliveries_total{outcome}.
func (b senderBundle) counter(t *testing.T, outcome webhook.Outcome) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == string(outcome) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no webhook_deliveries_total{outcome=%q}", outcome)
	return 0
}

// observations reads the sample count of webhook_delivery_duration_seconds{outcome}.
func (b senderBundle) observations(t *testing.T, outcome webhook.Outcome) uint64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "webhook_delivery_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == string(outcome) {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	t.Fatalf("no webhook_delivery_duration_seconds{outcome=%q}", outcome)
	return 0
}

// verify checks a received request with the reference library, as a receiver would.
func verify(t *testing.T, r request) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(testSecret)
	require.NoError(t, err)
	require.NoError(t, wh.Verify(r.body, r.header), "reference library Verify")
}

// delivery is the factory of test deliveries: a job.succeeded event to url.
func delivery(t *testing.T, jobID uuid.UUID, url string) webhook.Delivery {
	t.Helper()
	data, err := json.Marshal(map[string]any{"id": jobID, "status": "succeeded", "total": 3, "processed": 3, "failed": 0})
	require.NoError(t, err)
	payload, err := json.Marshal(webhook.Event{Type: webhook.EventJobSucceeded, Timestamp: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Data: data})
	require.NoError(t, err)
	return webhook.Delivery{
		ID: webhook.DeliveryID(jobID, webhook.EventJobSucceeded), JobID: jobID,
		EventType: webhook.EventJobSucceeded, URL: url, Payload: payload,
	}
}

// fakeResolver answers from a table; answers[host][i] is the answer to the i-th lookup (the
// last one repeats). It never touches the network.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	errs    map[string]error
	calls   map[string]int
}

func newResolver() *fakeResolver {
	return &fakeResolver{answers: map[string][][]netip.Addr{}, errs: map[string]error{}, calls: map[string]int{}}
}

// set makes host resolve to each list of addresses in turn.
func (f *fakeResolver) set(host string, answers ...string) *fakeResolver {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range answers {
		var addrs []netip.Addr
		for _, s := range bytes.Fields([]byte(a)) {
			addrs = append(addrs, netip.MustParseAddr(string(s)))
		}
		f.answers[host] = append(f.answers[host], addrs)
	}
	return f
}

func (f *fakeResolver) fail(host string, err error) *fakeResolver {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[host] = err
	return f
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err, ok := f.errs[host]; ok {
		return nil, err
	}
	list, ok := f.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(f.calls[host], len(list)-1)
	f.calls[host]++
	return list[i], nil
}

// testLogger writes log lines to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
