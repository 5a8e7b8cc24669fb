package prediction

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the seed's prediction metrics.
type Metrics struct {
	predictions *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	confidence  *prometheus.HistogramVec
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		predictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_predictions_total",
			Help: "Predictions answered, by model version and status (success, low_confidence, error).",
		}, []string{"model_version", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ml_prediction_duration_seconds",
			Help:    "Time to answer a prediction, from validation to recorded answer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"model_version"}),
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

func (m *Metrics) observe(o Output, threshold float64, took time.Duration) {
	status := "success"
	if o.Confidence < threshold {
		status = "low_confidence"
	}
	m.predictions.WithLabelValues(o.ModelVersion, status).Inc()
	m.duration.WithLabelValues(o.ModelVersion).Observe(took.Seconds())
	m.confidence.WithLabelValues(o.ModelVersion).Observe(o.Confidence)
}
