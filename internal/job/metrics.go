package job

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	submitted prometheus.Counter
	finished  *prometheus.CounterVec
	items     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reads     *prometheus.CounterVec
	// Per key (tenant = the key's id, so as many series as keys that ran jobs).
	running  *prometheus.GaugeVec
	rowsDone *prometheus.CounterVec
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
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "predq_job_chunks_running", Help: "Job chunks this process is running, by key (tenant: the key's id).",
		}, []string{"tenant"}),
		rowsDone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "predq_job_rows_done_total", Help: "Job rows this process finished (processed or failed), by key (tenant: the key's id).",
		}, []string{"tenant"}),
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
		reg.MustRegister(m.submitted, m.finished, m.items, m.duration, m.reads, m.running, m.rowsDone)
	}
	return m
}

// ShareCollector exports what each key with active jobs is owed in the fair share, read from
// Postgres at each scrape: predq_job_rows_pending{tenant} and
// predq_fair_virtual_time{tenant} (its rows claimed / weight). Register it in one process
// kind (the worker), since every process would report the same figures.
type ShareCollector struct {
	store   *Store
	pending *prometheus.Desc
	vtime   *prometheus.Desc
	weight  *prometheus.Desc
	errors  prometheus.Counter
}

// NewShareCollector returns a ShareCollector over store.
func NewShareCollector(store *Store) *ShareCollector {
	return &ShareCollector{
		store:   store,
		pending: prometheus.NewDesc("predq_job_rows_pending", "Rows of a key's active jobs not yet done: what the fair share owes it (tenant: the key's id).", []string{"tenant"}, nil),
		vtime:   prometheus.NewDesc("predq_fair_virtual_time", "A key's virtual time in the fair share: rows claimed for it divided by its weight; the smallest goes next.", []string{"tenant"}, nil),
		weight:  prometheus.NewDesc("predq_fair_weight", "A key's weight in the fair share of batch capacity.", []string{"tenant"}, nil),
		errors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "predq_fair_scrape_errors_total", Help: "Scrapes whose fair-share query failed."}),
	}
}

// Describe implements prometheus.Collector.
func (c *ShareCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.vtime
	ch <- c.weight
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *ShareCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	shares, err := c.store.TenantShares(ctx)
	if err != nil {
		c.errors.Inc()
	}
	for _, t := range shares {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(t.PendingRows), t.Owner)
		ch <- prometheus.MustNewConstMetric(c.vtime, prometheus.GaugeValue, t.VirtualTime, t.Owner)
		ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, float64(t.Weight), t.Owner)
	}
	c.errors.Collect(ch)
}
