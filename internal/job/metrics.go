package job

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	submitted prometheus.Counter
	finished  *prometheus.CounterVec
	items     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reads     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ml_jobs_submitted_total", Help: "Batch jobs accepted.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_jobs_finished_total", Help: "Batch jobs that reached a terminal status, by status.",
		}, []string{"status"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_job_items_total", Help: "Job items by stage (submitted, processed, failed).",
		}, []string{"stage"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ml_job_duration_seconds", Help: "Time from submission to terminal status, by status.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 16),
		}, []string{"status"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_job_reads_total", Help: "Job lists and result reads by the database that served them (primary, replica: DATABASE_READ_URL).",
		}, []string{"db"}),
	}
	m.reads.WithLabelValues("primary")
	m.reads.WithLabelValues("replica")
	// Every known series exists from the start, at 0, so that a dashboard or an alert rule
	// reads 0 rather than no data before the first job ends.
	for _, s := range []string{StatusSucceeded, StatusFailed, StatusCancelled} {
		m.finished.WithLabelValues(s)
		m.duration.WithLabelValues(s)
	}
	for _, stage := range []string{"submitted", "processed", "failed"} {
		m.items.WithLabelValues(stage)
	}
	if reg != nil {
		reg.MustRegister(m.submitted, m.finished, m.items, m.duration, m.reads)
	}
	return m
}
