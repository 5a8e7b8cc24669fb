package prediction

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Each answer counts once under its model version and status, and its duration and
// confidence are observed under its version, whichever versions come and in what order.
func TestMetricsCountEachAnswerUnderItsVersion(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	answers := []struct {
		version    string
		confidence float64
		threshold  float64
		protocol   string
	}{
		{"v1.0.0", 0.9, 0.5, ""}, {"v2.0.0", 0.6, 0.7, ""}, {"v1.0.0", 0.55, 0.6, ""}, {"v1.0.0", 0.8, 0.5, ""},
		{"v2.0.0", 0.99, 0.5, ""}, {"v2.0.0", 0.7, 0.5, ProtocolOIPREST},
	}
	for _, a := range answers {
		m.observe(Output{ModelVersion: a.version, Confidence: a.confidence}, a.protocol, a.threshold, 2*time.Millisecond)
	}
	// Every series as "name label=value,…": the counter's value, or a histogram's count and
	// sum.
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := map[string][2]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + " " + strings.Join(labels, ",")
			if h := mt.GetHistogram(); h != nil {
				got[key] = [2]float64{float64(h.GetSampleCount()), math.Round(h.GetSampleSum()*1000) / 1000}
			} else {
				got[key] = [2]float64{mt.GetCounter().GetValue()}
			}
		}
	}
	require.Equal(t, map[string][2]float64{
		"ml_predictions_total model_version=v1.0.0,protocol=v1,status=success":              {2},
		"ml_predictions_total model_version=v1.0.0,protocol=v1,status=low_confidence":       {1},
		"ml_predictions_total model_version=v2.0.0,protocol=v1,status=success":              {1},
		"ml_predictions_total model_version=v2.0.0,protocol=v1,status=low_confidence":       {1},
		"ml_predictions_total model_version=v2.0.0,protocol=oip_rest,status=success":        {1},
		"ml_predictions_total model_version=v2.0.0,protocol=oip_rest,status=low_confidence": {0},
		"ml_model_confidence model_version=v1.0.0":                                          {3, 2.25},
		"ml_model_confidence model_version=v2.0.0":                                          {3, 2.29},
		"ml_prediction_duration_seconds model_version=v1.0.0,protocol=v1":                   {3, 0.006},
		"ml_prediction_duration_seconds model_version=v2.0.0,protocol=v1":                   {2, 0.004},
		"ml_prediction_duration_seconds model_version=v2.0.0,protocol=oip_rest":             {1, 0.002},
	}, got)
}
