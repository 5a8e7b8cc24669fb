// Package config loads the typed configuration of every process from the environment (and an
// optional .env file), validates it and reports every problem at once, naming the variable.
package config

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the configuration of the api, worker and scheduler processes. Defaults are given
// in the table of Vars.
type Config struct {
	Env      string // APP_ENV: development or production
	Port     int    // PORT: the api's HTTP port
	LogLevel string // LOG_LEVEL: debug, info, warn, error

	DatabaseURL   string        // DATABASE_URL
	DBPoolSize    int           // DB_POOL_SIZE: 1..100
	RedisURL      string        // REDIS_URL: redis://, rediss://, redis-sentinel:// or redis-cluster://
	CacheRedisURL string        // CACHE_REDIS_URL: defaults to REDIS_URL
	RedisTTL      time.Duration // REDIS_TTL: seconds, >= 60
	RedisTimeout  time.Duration // REDIS_TIMEOUT: per cache call; predict falls back to inference past it
	// PersistCacheHits: PERSIST_CACHE_HITS; cache hits are stored like computed predictions.
	PersistCacheHits bool
	// PersistPath: PERSIST_PATH, postgres (the api writes each group-committed batch to
	// Postgres before it answers; the queue is its fallback) or queue (the api enqueues and the
	// worker writes; Postgres is the fallback).
	PersistPath string

	SecretKey      string   // SECRET_KEY: >= 32 characters; signs pagination cursors
	APIKeys        []string // API_KEYS: comma-separated, each "name:key" or "key"
	AllowedOrigins []string // ALLOWED_ORIGINS: comma-separated origins for CORS
	RateLimit      float64  // RATE_LIMIT: requests per second per API key; 0 turns it off
	RateBurst      int      // RATE_BURST
	BodyLimit      int64    // BODY_LIMIT: bytes of a JSON request body

	ModelPath    string // MODEL_PATH
	MaxBatchSize int    // MAX_BATCH_SIZE: samples of one inline batch predict

	MaxJobSamples int           // MAX_JOB_SAMPLES: samples of a JSON job submission
	MaxJobRows    int           // MAX_JOB_ROWS: rows of an NDJSON or CSV job submission
	JobChunkSize  int           // JOB_CHUNK_SIZE: rows per job:chunk task
	JobTimeout    time.Duration // JOB_TIMEOUT: a job not finished this long after submission fails

	WorkerConcurrency    int // WORKER_CONCURRENCY
	WorkerMetricsPort    int // WORKER_METRICS_PORT
	SchedulerMetricsPort int // SCHEDULER_METRICS_PORT

	WebhookSecret       string // WEBHOOK_SECRET: whsec_ + base64
	WebhookAllowPrivate bool   // WEBHOOK_ALLOW_PRIVATE
	AlertWebhookURL     string // ALERT_WEBHOOK_URL

	OTLPEndpoint string // OTEL_EXPORTER_OTLP_ENDPOINT
	PprofAddr    string // PPROF_ADDR: host:port of the net/http/pprof listener; off when empty

	ReconcileInterval   time.Duration // RECONCILE_INTERVAL
	ReconcileGrace      time.Duration // RECONCILE_GRACE
	RetentionInterval   time.Duration // RETENTION_INTERVAL
	ModelSyncInterval   time.Duration // MODEL_SYNC_INTERVAL
	PredictionRetention time.Duration // PREDICTION_RETENTION
	JobRetention        time.Duration // JOB_RETENTION

	MonitoringUser       string // MONITORING_USER
	MonitoringPassword   string // MONITORING_PASSWORD
	MonitoringPrometheus string // MONITORING_PROMETHEUS_URL
	MonitoringReadOnly   bool   // MONITORING_READ_ONLY
}

// Var documents one environment variable.
type Var struct {
	Name    string
	Default string
	Doc     string
}

// Vars lists every variable the processes read, with defaults and meaning. Tests of the
// deployment files check every variable they set against this list.
var Vars = []Var{
	{"APP_ENV", "development", "development or production; production refuses a missing SECRET_KEY"},
	{"PORT", "8080", "HTTP port of the api"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"DATABASE_URL", "postgres://postgres@127.0.0.1:5432/predq?sslmode=disable", "Postgres connection URL"},
	{"DB_POOL_SIZE", "20", "Postgres pool size per process (1..100; at least WORKER_CONCURRENCY for a worker)"},
	{"REDIS_URL", "redis://127.0.0.1:6379/0", "queue Redis: redis://, rediss://, redis-sentinel://[:pw@]h1:p,h2:p/db?master=NAME, redis-cluster://h1:p,h2:p"},
	{"CACHE_REDIS_URL", "", "cache Redis (defaults to REDIS_URL)"},
	{"REDIS_TTL", "3600", "seconds a cached prediction lives (>= 60)"},
	{"REDIS_TIMEOUT", "100ms", "timeout of one cache call; past it predict answers by inference"},
	{"PERSIST_PATH", "postgres", "how the api persists answered predictions: postgres (written before the answer; enqueued for the worker only when Postgres fails) or queue (enqueued for the worker; written by the api only when Redis fails)"},
	{"PERSIST_CACHE_HITS", "false", "store predictions answered from the cache too (by default only computed ones, and low-confidence hits, are stored)"},
	{"SECRET_KEY", "", "at least 32 characters; signs pagination cursors (random per process when unset in development)"},
	{"API_KEYS", "", "comma-separated static API keys, each name:key or key"},
	{"ALLOWED_ORIGINS", "", "comma-separated origins allowed by CORS (none when empty)"},
	{"RATE_LIMIT", "0", "requests per second per API key (0: off)"},
	{"RATE_BURST", "0", "burst of the rate limit (default 2 x RATE_LIMIT)"},
	{"BODY_LIMIT", "4194304", "bytes of a JSON request body"},
	{"MODEL_PATH", "./models", "directory of model artifacts"},
	{"MAX_BATCH_SIZE", "1000", "samples of one inline batch predict"},
	{"MAX_JOB_SAMPLES", "100000", "samples of a JSON job submission"},
	{"MAX_JOB_ROWS", "5000000", "rows of an NDJSON or CSV job submission"},
	{"JOB_CHUNK_SIZE", "5000", "rows per job:chunk task"},
	{"JOB_CHUNK_WRITERS", "2", "job chunks a worker commits at once (their result COPYs; more only queue inside Postgres)"},
	{"JOB_TIMEOUT", "1h", "a job not finished this long after submission fails"},
	{"WORKER_CONCURRENCY", "16", "tasks a worker runs at once"},
	{"WORKER_METRICS_PORT", "9091", "worker's /health and /metrics port"},
	{"WORKER_QUEUES", "critical=6,default=3,batch=2,low=1", "worker's queue weights, every queue listed"},
	{"WORKER_SHUTDOWN_TIMEOUT", "20s", "how long a stopping worker waits for active tasks before pushing them back to their queues"},
	{"PERSIST_GROUP_MAX_SIZE", "500", "prediction records aggregated into one prediction:persist task at most (1..5000)"},
	{"PERSIST_GROUP_MAX_DELAY", "2s", "longest wait of a prediction record in its group before it is written (>= 1s)"},
	{"SCHEDULER_METRICS_PORT", "9092", "scheduler's /health and /metrics port"},
	{"WEBHOOK_SECRET", "", "whsec_<base64> secret that signs job webhooks"},
	{"WEBHOOK_ALLOW_PRIVATE", "false", "allow webhook URLs on private/loopback addresses (tests, local development)"},
	{"ALERT_WEBHOOK_URL", "", "URL that receives low-confidence alerts (off when empty)"},
	{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP/HTTP endpoint for traces (off when empty)"},
	{"GOGC", "400", "Go's garbage-collector target in the api and the worker (Go's own default is 100; see TuneGC)"},
	{"GOMEMLIMIT", "256MiB", "Go's soft memory limit in the api and the worker; set it below the container's memory limit"},
	{"PPROF_ADDR", "", "host:port of a net/http/pprof listener in the api and the worker, e.g. 127.0.0.1:6060 (off when empty; keep it off public interfaces)"},
	{"RECONCILE_INTERVAL", "30s", "how often the scheduler enqueues maintenance:reconcile"},
	{"RECONCILE_GRACE", "30s", "how long unfinished work may sit untouched before the reconciler enqueues it again"},
	{"RETENTION_INTERVAL", "1h", "how often the scheduler enqueues maintenance:retention"},
	{"MODEL_SYNC_INTERVAL", "1m", "how often maintenance:model-sync registers new artifacts and every process refreshes its models"},
	{"PREDICTION_RETENTION", "720h", "age past which persisted predictions are deleted"},
	{"JOB_RETENTION", "168h", "age past which finished jobs, with their inputs and results, are deleted"},
	{"MONITORING_USER", "", "HTTP Basic user of the asynqmon dashboard at /monitoring/ (off unless user and password are set)"},
	{"MONITORING_PASSWORD", "", "HTTP Basic password of the dashboard (at least 12 characters)"},
	{"MONITORING_PROMETHEUS_URL", "", "Prometheus URL the dashboard's charts query (charts off when empty)"},
	{"MONITORING_READ_ONLY", "false", "dashboard in view-only mode"},
}

// Known reports whether name is a variable of Vars.
func Known(name string) bool {
	return slices.ContainsFunc(Vars, func(v Var) bool { return v.Name == name })
}

// Load reads the configuration through getenv, with the defaults of Vars, and validates it.
// All problems are returned together, each naming its variable.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	var c Config
	c.Env = l.oneOf("APP_ENV", "development", "production")
	c.Port = l.intRange("PORT", 1, 65535)
	c.LogLevel = l.oneOf("LOG_LEVEL", "debug", "info", "warn", "error")
	c.DatabaseURL = l.url("DATABASE_URL", "postgres", "postgresql")
	c.DBPoolSize = l.intRange("DB_POOL_SIZE", 1, 100)
	c.RedisURL = l.url("REDIS_URL", "redis", "rediss", "redis-sentinel", "redis-cluster")
	if l.get("CACHE_REDIS_URL") == "" {
		c.CacheRedisURL = c.RedisURL
	} else {
		c.CacheRedisURL = l.url("CACHE_REDIS_URL", "redis", "rediss", "redis-sentinel", "redis-cluster")
	}
	c.RedisTTL = time.Duration(l.intRange("REDIS_TTL", 60, 30*24*3600)) * time.Second
	c.RedisTimeout = l.duration("REDIS_TIMEOUT", time.Millisecond, time.Minute)
	c.PersistCacheHits = l.boolean("PERSIST_CACHE_HITS")
	c.PersistPath = l.oneOf("PERSIST_PATH", "postgres", "queue")
	c.SecretKey = l.get("SECRET_KEY")
	if c.SecretKey != "" && len(c.SecretKey) < 32 {
		l.fail("SECRET_KEY", "must be at least 32 characters, got %d", len(c.SecretKey))
	} else if c.SecretKey == "" && c.Env == "production" {
		l.fail("SECRET_KEY", "is required when APP_ENV=production")
	}
	c.APIKeys = l.list("API_KEYS")
	for _, k := range c.APIKeys {
		_, key, ok := strings.Cut(k, ":")
		if !ok {
			key = k
		}
		if len(key) < 16 {
			l.fail("API_KEYS", "every key must be at least 16 characters")
			break
		}
	}
	c.AllowedOrigins = l.list("ALLOWED_ORIGINS")
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			l.fail("ALLOWED_ORIGINS", "%q is not an origin like https://app.example.com", o)
		}
	}
	c.RateLimit = l.floatRange("RATE_LIMIT", 0, 1e6)
	c.RateBurst = l.intRange("RATE_BURST", 0, 1e7)
	if c.RateBurst == 0 && c.RateLimit > 0 {
		c.RateBurst = max(1, int(2*c.RateLimit))
	}
	c.BodyLimit = int64(l.intRange("BODY_LIMIT", 1024, 1<<30))
	c.ModelPath = l.get("MODEL_PATH")
	c.MaxBatchSize = l.intRange("MAX_BATCH_SIZE", 1, 100_000)
	c.MaxJobSamples = l.intRange("MAX_JOB_SAMPLES", 1, 10_000_000)
	c.MaxJobRows = l.intRange("MAX_JOB_ROWS", 1, 100_000_000)
	c.JobChunkSize = l.intRange("JOB_CHUNK_SIZE", 10, 100_000)
	c.JobTimeout = l.duration("JOB_TIMEOUT", time.Second, 7*24*time.Hour)
	c.WorkerConcurrency = l.intRange("WORKER_CONCURRENCY", 1, 1024)
	c.WorkerMetricsPort = l.intRange("WORKER_METRICS_PORT", 0, 65535)
	c.SchedulerMetricsPort = l.intRange("SCHEDULER_METRICS_PORT", 0, 65535)
	c.WebhookSecret = l.get("WEBHOOK_SECRET")
	if c.WebhookSecret != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(c.WebhookSecret, "whsec_"))
		switch {
		case !strings.HasPrefix(c.WebhookSecret, "whsec_"):
			l.fail("WEBHOOK_SECRET", "must start with whsec_")
		case err != nil || len(key) < 24 || len(key) > 64:
			l.fail("WEBHOOK_SECRET", "must be whsec_ followed by the base64 of 24 to 64 random bytes")
		}
	}
	c.WebhookAllowPrivate = l.boolean("WEBHOOK_ALLOW_PRIVATE")
	if l.get("ALERT_WEBHOOK_URL") != "" {
		c.AlertWebhookURL = l.url("ALERT_WEBHOOK_URL", "http", "https")
	}
	if l.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		c.OTLPEndpoint = l.url("OTEL_EXPORTER_OTLP_ENDPOINT", "http", "https")
	}
	if a := l.get("PPROF_ADDR"); a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			l.fail("PPROF_ADDR", "%q is not a host:port like 127.0.0.1:6060", a)
		}
		c.PprofAddr = a
	}
	c.ReconcileInterval = l.duration("RECONCILE_INTERVAL", time.Second, 24*time.Hour)
	c.ReconcileGrace = l.duration("RECONCILE_GRACE", time.Second, 24*time.Hour)
	c.RetentionInterval = l.duration("RETENTION_INTERVAL", time.Second, 7*24*time.Hour)
	c.ModelSyncInterval = l.duration("MODEL_SYNC_INTERVAL", time.Second, 24*time.Hour)
	c.PredictionRetention = l.duration("PREDICTION_RETENTION", time.Minute, 100*365*24*time.Hour)
	c.JobRetention = l.duration("JOB_RETENTION", time.Minute, 100*365*24*time.Hour)
	c.MonitoringUser = l.get("MONITORING_USER")
	c.MonitoringPassword = l.get("MONITORING_PASSWORD")
	if (c.MonitoringUser == "") != (c.MonitoringPassword == "") {
		l.fail("MONITORING_PASSWORD", "MONITORING_USER and MONITORING_PASSWORD go together")
	} else if c.MonitoringPassword != "" && len(c.MonitoringPassword) < 12 {
		l.fail("MONITORING_PASSWORD", "must be at least 12 characters")
	}
	if l.get("MONITORING_PROMETHEUS_URL") != "" {
		c.MonitoringPrometheus = l.url("MONITORING_PROMETHEUS_URL", "http", "https")
	}
	c.MonitoringReadOnly = l.boolean("MONITORING_READ_ONLY")
	return c, errors.Join(l.errs...)
}

// Redacted returns the configuration as key/value pairs for the startup log line, secrets
// masked and passwords removed from URLs.
func (c Config) Redacted() []any {
	return []any{
		"app_env", c.Env, "port", c.Port, "log_level", c.LogLevel,
		"database_url", RedactURL(c.DatabaseURL), "db_pool_size", c.DBPoolSize,
		"redis_url", RedactURL(c.RedisURL), "cache_redis_url", RedactURL(c.CacheRedisURL),
		"redis_ttl", c.RedisTTL.String(), "persist_cache_hits", c.PersistCacheHits, "persist_path", c.PersistPath, "secret_key", mask(c.SecretKey),
		"api_keys", len(c.APIKeys), "allowed_origins", c.AllowedOrigins,
		"rate_limit", c.RateLimit, "model_path", c.ModelPath, "max_batch_size", c.MaxBatchSize,
		"worker_concurrency", c.WorkerConcurrency, "webhook_secret", mask(c.WebhookSecret),
		"webhook_allow_private", c.WebhookAllowPrivate, "otlp_endpoint", c.OTLPEndpoint,
		"monitoring", c.MonitoringUser != "", "monitoring_password", mask(c.MonitoringPassword),
	}
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// RedactURL returns raw with its password masked, for logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// ReadDotEnv reads KEY=VALUE lines (comments with #, optional quotes, optional "export ")
// from r. Values already set in the real environment win over the file: getenv below
// returns the first non-empty of the two.
func ReadDotEnv(r io.Reader) (map[string]string, error) {
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf(".env line %d: want KEY=VALUE", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		vals[k] = v
	}
	return vals, sc.Err()
}

// WithDotEnv returns a getenv that falls back to the .env file at path when it exists.
func WithDotEnv(getenv func(string) string, path string) (func(string) string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return getenv, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vals, err := ReadDotEnv(f)
	if err != nil {
		return nil, err
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return vals[k]
	}, nil
}

type loader struct {
	getenv func(string) string
	errs   []error
}

func (l *loader) fail(name, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
}

// get returns the variable's value or its default.
func (l *loader) get(name string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	for _, v := range Vars {
		if v.Name == name {
			return v.Default
		}
	}
	panic("config: unknown variable " + name) // a programming error: every variable is in Vars
}

func (l *loader) intRange(name string, lo, hi int) int {
	s := l.get(name)
	n, err := strconv.Atoi(s)
	if err != nil {
		l.fail(name, "must be a whole number, got %q", s)
		return 0
	}
	if n < lo || n > hi {
		l.fail(name, "must be between %d and %d, got %d", lo, hi, n)
	}
	return n
}

func (l *loader) floatRange(name string, lo, hi float64) float64 {
	s := l.get(name)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		l.fail(name, "must be a number, got %q", s)
		return 0
	}
	if !(f >= lo && f <= hi) {
		l.fail(name, "must be between %g and %g, got %g", lo, hi, f)
	}
	return f
}

func (l *loader) duration(name string, lo, hi time.Duration) time.Duration {
	s := l.get(name)
	d, err := time.ParseDuration(s)
	if err != nil {
		l.fail(name, "must be a duration like 100ms or 2s, got %q", s)
		return 0
	}
	if d < lo || d > hi {
		l.fail(name, "must be between %s and %s, got %s", lo, hi, d)
	}
	return d
}

func (l *loader) boolean(name string) bool {
	s := l.get(name)
	b, err := strconv.ParseBool(s)
	if err != nil {
		l.fail(name, "must be true or false, got %q", s)
	}
	return b
}

func (l *loader) oneOf(name string, allowed ...string) string {
	s := strings.ToLower(l.get(name))
	if !slices.Contains(allowed, s) {
		l.fail(name, "must be one of %s, got %q", strings.Join(allowed, ", "), s)
	}
	return s
}

func (l *loader) url(name string, schemes ...string) string {
	s := l.get(name)
	u, err := url.Parse(s)
	if err != nil {
		l.fail(name, "is not a URL")
		return s
	}
	if !slices.Contains(schemes, u.Scheme) {
		l.fail(name, "must use scheme %s, got %q", strings.Join(schemes, ", "), u.Scheme)
	}
	return s
}

func (l *loader) list(name string) []string {
	var out []string
	for _, p := range strings.Split(l.get(name), ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
