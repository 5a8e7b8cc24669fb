package grpcapi

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/predq/predq/internal/telemetry"
)

// metrics are the gRPC call metrics, the counterpart of the HTTP front door's
// http_requests_total / http_request_duration_seconds / http_requests_in_flight, under the
// names and labels of go-grpc-middleware's Prometheus provider (grpc_type, grpc_service,
// grpc_method, grpc_code; the histogram without grpc_code), which existing gRPC dashboards
// read. Every method's series exist from the start (its OK count at 0), as that provider's
// InitializeMetrics does.
type metrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge

	series telemetry.Children[seriesKey, *callSeries]
}

type seriesKey struct {
	typ, service, method string
	code                 codes.Code
}

type callSeries struct {
	handled  prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "gRPC calls answered, by type (unary, server_stream, client_stream, bidi_stream), service, method and status code.",
		}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Time to answer a gRPC call, by type, service and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"grpc_type", "grpc_service", "grpc_method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpc_server_in_flight",
			Help: "gRPC calls being answered.",
		}),
	}
	for _, c := range []prometheus.Collector{m.handled, m.duration, m.inFlight} {
		if err := reg.Register(c); err != nil {
			if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
				return nil, fmt.Errorf("grpcapi: register metrics: %w (one server per registry)", are)
			}
			return nil, fmt.Errorf("grpcapi: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(typ, service, method string, code codes.Code, took time.Duration) {
	s := m.series.Get(seriesKey{typ, service, method, code}, func() *callSeries {
		return &callSeries{
			handled:  m.handled.WithLabelValues(typ, service, method, code.String()),
			duration: m.duration.WithLabelValues(typ, service, method),
		}
	})
	s.handled.Inc()
	s.duration.Observe(took.Seconds())
}

// initialize makes the series of every method of srv's services at 0: its OK count and its
// histogram.
func (m *metrics) initialize(services map[string]grpc.ServiceInfo) {
	for svc, info := range services {
		for _, mi := range info.Methods {
			typ := methodType(mi.IsClientStream, mi.IsServerStream)
			m.handled.WithLabelValues(typ, svc, mi.Name, codes.OK.String())
			m.duration.WithLabelValues(typ, svc, mi.Name)
		}
	}
}

// methodType is the grpc_type label of a method.
func methodType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}
