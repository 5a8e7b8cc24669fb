package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is one span as an OTLP exporter sent it, reduced to what the tests compare.
type otlpSpan struct {
	TraceID  string // 32 hex digits
	SpanID   string // 16 hex digits
	ParentID string // 16 hex digits, "" for a root span
	Name     string
	Kind     string // SPAN_KIND_SERVER, SPAN_KIND_CONSUMER, …
	Service  string // the resource's service.name
	Error    bool   // status code ERROR
	Attrs    map[string]string
	Links    []string // trace ids of the linked spans
}

func (s otlpSpan) String() string {
	return fmt.Sprintf("%s %q (%s) trace=%s span=%s parent=%s", s.Service, s.Name, s.Kind, s.TraceID, s.SpanID, s.ParentID)
}

// otlpReceiver is an in-process OTLP/HTTP trace receiver: an httptest server on 127.0.0.1
// that takes POST /v1/traces (protobuf, gzip or not) and keeps every span it is sent. Point
// OTEL_EXPORTER_OTLP_ENDPOINT at Endpoint().
type otlpReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	spans    []otlpSpan
	requests int
	errs     []string // requests it could not decode
}

// newOTLPReceiver starts a receiver, closed when the test ends.
func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.handleTraces)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces).
func (r *otlpReceiver) Endpoint() string { return r.srv.URL }

func (r *otlpReceiver) fail(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
	http.Error(w, msg, status)
}

func (r *otlpReceiver) handleTraces(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.fail(w, http.StatusUnsupportedMediaType, "content type %q (want application/x-protobuf)", ct)
		return
	}
	var body io.Reader = req.Body
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, http.StatusBadRequest, "gzip: %v", err)
			return
		}
		defer zr.Close()
		body = zr
	default:
		r.fail(w, http.StatusUnsupportedMediaType, "content encoding %q", enc)
		return
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		r.fail(w, http.StatusBadRequest, "read: %v", err)
		return
	}
	var msg collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		r.fail(w, http.StatusBadRequest, "decode: %v", err)
		return
	}
	var got []otlpSpan
	for _, rs := range msg.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s := otlpSpan{
					TraceID: hex.EncodeToString(sp.GetTraceId()),
					SpanID:  hex.EncodeToString(sp.GetSpanId()),
					Name:    sp.GetName(),
					Kind:    sp.GetKind().String(),
					Service: service,
					Error:   sp.GetStatus().GetCode().String() == "STATUS_CODE_ERROR",
					Attrs:   map[string]string{},
				}
				if p := sp.GetParentSpanId(); len(p) > 0 {
					s.ParentID = hex.EncodeToString(p)
				}
				for _, kv := range sp.GetAttributes() {
					s.Attrs[kv.GetKey()] = anyString(kv.GetValue())
				}
				for _, l := range sp.GetLinks() {
					s.Links = append(s.Links, hex.EncodeToString(l.GetTraceId()))
				}
				got = append(got, s)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.requests++
	r.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	default:
		return v.String()
	}
}

// Spans returns a copy of every span received so far.
func (r *otlpReceiver) Spans() []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Errors returns the problems of the requests it could not decode.
func (r *otlpReceiver) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// waitFor waits until find, given every span received so far, returns true; it fails the
// test with what was received after within.
func (r *otlpReceiver) waitFor(t *testing.T, within time.Duration, what string, find func([]otlpSpan) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return find(r.Spans()) }, within, 50*time.Millisecond,
		"%s: not received within %s; errors %v; spans:\n%s", what, within, r.Errors(), dumpSpans(r.Spans()))
}

// spanSet is a helper view of received spans.
type spanSet []otlpSpan

// trace returns the spans of one trace.
func (ss spanSet) trace(traceID string) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// named returns the spans of service with name.
func (ss spanSet) named(service, name string) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.Service == service && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// byID returns the span with id, or false.
func (ss spanSet) byID(id string) (otlpSpan, bool) {
	for _, s := range ss {
		if s.SpanID == id {
			return s, true
		}
	}
	return otlpSpan{}, false
}

// childrenOf returns the spans whose parent is id.
func (ss spanSet) childrenOf(id string) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.ParentID == id {
			out = append(out, s)
		}
	}
	return out
}

// descends reports whether s has ancestor among ss (following parent ids).
func (ss spanSet) descends(s otlpSpan, ancestor string) bool {
	for range len(ss) + 1 {
		if s.ParentID == "" {
			return false
		}
		if s.ParentID == ancestor {
			return true
		}
		p, ok := ss.byID(s.ParentID)
		if !ok {
			return false
		}
		s = p
	}
	return false
}

// dumpSpans renders spans as an indented tree per trace, for failure messages and logs.
func dumpSpans(spans []otlpSpan) string {
	ss := spanSet(spans)
	var traces []string
	for _, s := range ss {
		if !slices.Contains(traces, s.TraceID) {
			traces = append(traces, s.TraceID)
		}
	}
	var b strings.Builder
	for _, id := range traces {
		tr := ss.trace(id)
		fmt.Fprintf(&b, "trace %s\n", id)
		var walk func(s otlpSpan, depth int)
		walk = func(s otlpSpan, depth int) {
			fmt.Fprintf(&b, "%s%s %q (%s)%s\n", strings.Repeat("  ", depth+1), s.Service, s.Name, s.Kind, map[bool]string{true: " ERROR"}[s.Error])
			for _, c := range tr.childrenOf(s.SpanID) {
				walk(c, depth+1)
			}
		}
		for _, s := range tr {
			if _, ok := tr.byID(s.ParentID); !ok { // a root, or a span whose parent was not exported
				walk(s, 0)
			}
		}
	}
	return b.String()
}
