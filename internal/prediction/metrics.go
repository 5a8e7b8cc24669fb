package prediction

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/predq/predq/internal/telemetry"
)

// Metrics are the seed's prediction metrics.
type Metrics struct {
	predictions *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	confidence  *prometheus.HistogramVec

	// byVersion holds the series of each model version and protocol, looked up once:
	// finding them by label values on every answer would hash the labels three times.
	byVersion telemetry.Children[seriesKey, *versionSeries]
}

// seriesKey names the series of one model version answered over one protocol.
type seriesKey struct{ version, protocol string }

// Protocols of Meta.Protocol, the protocol label of the prediction metrics.
const (
	ProtocolV1      = "v1"       // /api/v1 (the default of an empty Meta.Protocol)
	ProtocolOIPREST = "oip_rest" // the Open Inference Protocol's REST binding, /v2
	ProtocolOIPGRPC = "oip_grpc" // the Open Inference Protocol's gRPC binding
)

// protocolOf is the label value of a Meta.Protocol.
func protocolOf(p string) string {
	if p == "" {
		return ProtocolV1
	}
	return p
}

// versionSeries are the series of one model version and protocol.
type versionSeries struct {
	success, lowConfidence prometheus.Counter
	duration, confidence   prometheus.Observer
}

func (m *Metrics) series(version, protocol string) *versionSeries {
	return m.byVersion.Get(seriesKey{version, protocol}, func() *versionSeries {
		return &versionSeries{
			success:       m.predictions.WithLabelValues(version, "success", protocol),
			lowConfidence: m.predictions.WithLabelValues(version, "low_confidence", protocol),
			duration:      m.duration.WithLabelValues(version, protocol),
			confidence:    m.confidence.WithLabelValues(version),
		}
	})
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		predictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_predictions_total",
			Help: "Predictions answered, by model version, status (success, low_confidence, error) and protocol (v1, oip_rest, oip_grpc).",
		}, []string{"model_version", "status", "protocol"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ml_prediction_duration_seconds",
			Help:    "Time to answer a prediction, from validation to recorded answer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"model_version", "protocol"}),
		confidence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ml_model_confidence",
			Help:    "Confidence (max(p, 1-p)) of answered predictions.",
			Buckets: []float64{.5, .55, .6, .65, .7, .75, .8, .85, .9, .95, .99, 1},
		}, []string{"model_version"}),
	}
	if reg != nil {
		reg.MustRegister(m.predictions, m.duration, m.confidence)
	}
	return m
}

func (m *Metrics) observe(o Output, protocol string, threshold float64, took time.Duration) {
	s := m.series(o.ModelVersion, protocolOf(protocol))
	if o.Confidence < threshold {
		s.lowConfidence.Inc()
	} else {
		s.success.Inc()
	}
	s.duration.Observe(took.Seconds())
	s.confidence.Observe(o.Confidence)
}
