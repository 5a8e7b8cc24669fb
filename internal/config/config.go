// Package config loads the typed configuration of every process from the environment (and an
// optional .env file), validates it and reports every problem at once, naming the variable.
//
// Each variable is one field of Config, and its tags say everything about it:
//
//	env         its name (github.com/caarlos0/env)
//	envDefault  its value when unset or blank
//	doc         what it means (Vars; README's configuration table is checked against Vars)
//	range       "lo,hi": the inclusive bounds of a number or a duration
//	unit        "s": a whole number of seconds, held as a time.Duration
//	oneof       the allowed values, space-separated (the value is lower-cased first)
//	scheme      the allowed URL schemes, space-separated (checked when set)
//	redact      how the start-up log line shows it: mask (*** when set, a list's length),
//	            url (the password masked) or omit
//
// Rules that involve more than one value, or a format of their own, are in Config.check.
// Only the binaries under cmd import this package: the packages below them take plain values.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/predq/predq/internal/auth"
)

// Config is the configuration of the api, worker and scheduler processes.
type Config struct {
	Env      string `env:"APP_ENV" envDefault:"development" oneof:"development production" doc:"development or production; production refuses a missing SECRET_KEY"`
	Port     int    `env:"PORT" envDefault:"8080" range:"1,65535" doc:"HTTP port of the api"`
	GRPCPort int    `env:"GRPC_PORT" envDefault:"8081" range:"0,65535" doc:"gRPC port of the api: the Open Inference Protocol's GRPCInferenceService, gRPC health and reflection (0: a free port, logged)"`
	LogLevel string `env:"LOG_LEVEL" envDefault:"info" oneof:"debug info warn error" doc:"debug, info, warn or error"`

	DatabaseURL     string        `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/predq?sslmode=disable" scheme:"postgres postgresql" redact:"url" doc:"Postgres connection URL"`
	DatabaseReadURL string        `env:"DATABASE_READ_URL" scheme:"postgres postgresql" redact:"url" doc:"Postgres streaming replica of DATABASE_URL for the api's reads that tolerate lag: job lists, job results (when it has caught up), prediction lists (empty: the primary serves all)"`
	DBPoolSize      int           `env:"DB_POOL_SIZE" envDefault:"20" range:"1,100" doc:"Postgres pool size per process (1..100; at least WORKER_CONCURRENCY for a worker)"`
	RedisURL        string        `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0" scheme:"redis rediss redis-sentinel redis-cluster" redact:"url" doc:"queue Redis: redis://, rediss://, redis-sentinel://[:pw@]h1:p,h2:p/db?master=NAME, redis-cluster://h1:p,h2:p"`
	CacheRedisURL   string        `env:"CACHE_REDIS_URL" scheme:"redis rediss redis-sentinel redis-cluster" redact:"url" doc:"cache Redis (REDIS_URL when empty)"`
	RedisTTL        time.Duration `env:"REDIS_TTL" envDefault:"3600" unit:"s" range:"60,2592000" doc:"seconds a cached prediction lives (>= 60)"`
	RedisTimeout    time.Duration `env:"REDIS_TIMEOUT" envDefault:"100ms" range:"1ms,1m" doc:"timeout of one cache call; past it predict answers by inference"`

	PersistPath      string `env:"PERSIST_PATH" envDefault:"postgres" oneof:"postgres queue" doc:"how the api persists answered predictions: postgres (written before the answer; enqueued for the worker only when Postgres fails) or queue (enqueued for the worker; written by the api only when Redis fails)"`
	PersistCacheHits bool   `env:"PERSIST_CACHE_HITS" envDefault:"false" doc:"store predictions answered from the cache too (by default only computed ones, and low-confidence hits, are stored)"`

	SecretKey      string   `env:"SECRET_KEY" redact:"mask" doc:"at least 32 characters; signs pagination cursors (random per process when unset in development)"`
	APIKeys        []string `env:"API_KEYS" redact:"mask" doc:"comma-separated static API keys, each key, name:key, name:key:scopes or name:key:scopes:attributes with scopes joined by + (predict+jobs) and attributes k=v joined by commas (class=bulk,weight=2,max_pending_rows=N,max_queued_jobs=N); keys of at least 16 characters without ':'; a key without scopes has all (predict, jobs, admin, review), an unnamed one is named key-<its id>"`
	AllowedOrigins []string `env:"ALLOWED_ORIGINS" doc:"comma-separated origins allowed by CORS (none when empty)"`
	RateLimit      float64  `env:"RATE_LIMIT" envDefault:"0" range:"0,1e6" doc:"requests per second per API key (0: off)"`
	RateBurst      int      `env:"RATE_BURST" envDefault:"0" range:"0,10000000" doc:"burst of the rate limit (0: 2 x RATE_LIMIT)"`
	AuthFailRate   float64  `env:"AUTH_FAIL_RATE" envDefault:"5" range:"0,1e6" doc:"failed authentications per second allowed per client address on /api/v1 and /monitoring/; past AUTH_FAIL_BURST the address gets 429 before its key is checked (0: off)"`
	AuthFailBurst  int      `env:"AUTH_FAIL_BURST" envDefault:"20" range:"1,10000000" doc:"burst of AUTH_FAIL_RATE"`
	BodyLimit      int64    `env:"BODY_LIMIT" envDefault:"4194304" range:"1024,1073741824" doc:"bytes of a JSON request body, and of a gRPC request message"`

	AdmissionControl      bool          `env:"ADMISSION_CONTROL" envDefault:"true" doc:"adaptive admission control of predict and batch predict: a concurrency limit that follows latency, a short priority queue, 503 past it (see Overload)"`
	AdmissionMinLimit     int           `env:"ADMISSION_MIN_LIMIT" envDefault:"4" range:"1,10000" doc:"least concurrency the admission limit shrinks to"`
	AdmissionMaxLimit     int           `env:"ADMISSION_MAX_LIMIT" envDefault:"200" range:"1,10000" doc:"most concurrency the admission limit grows to"`
	AdmissionInitialLimit int           `env:"ADMISSION_INITIAL_LIMIT" envDefault:"20" range:"1,10000" doc:"admission limit at start (between the min and the max)"`
	AdmissionQueueSize    int           `env:"ADMISSION_QUEUE_SIZE" envDefault:"64" range:"0,100000" doc:"requests that may wait for an admission slot (bulk keys: half of it, and only while no interactive request waits)"`
	AdmissionMaxWait      time.Duration `env:"ADMISSION_MAX_WAIT" envDefault:"100ms" range:"1ms,1m" doc:"longest a request waits for an admission slot, and the longest wait the drain rate may predict for it, before 503"`

	ModelPath    string `env:"MODEL_PATH" envDefault:"./models" doc:"directory of model artifacts"`
	MaxBatchSize int    `env:"MAX_BATCH_SIZE" envDefault:"1000" range:"1,100000" doc:"samples of one inline batch predict"`

	MaxJobSamples     int           `env:"MAX_JOB_SAMPLES" envDefault:"100000" range:"1,10000000" doc:"samples of a JSON job submission"`
	MaxJobRows        int           `env:"MAX_JOB_ROWS" envDefault:"5000000" range:"1,100000000" doc:"rows of an NDJSON or CSV job submission"`
	JobChunkSize      int           `env:"JOB_CHUNK_SIZE" envDefault:"5000" range:"10,100000" doc:"rows per job:chunk task"`
	BatchShards       int           `env:"BATCH_SHARDS" envDefault:"1" range:"1,64" doc:"shards of the batch queue, each named to land on its own master of a Redis Cluster of as many masters (README, Scaling out); 1 keeps the one queue batch; every api, worker and scheduler must agree"`
	JobChunkWriters   int           `env:"JOB_CHUNK_WRITERS" envDefault:"2" range:"1,64" doc:"job chunks a worker commits at once (their result COPYs; more only queue inside Postgres)"`
	JobMaxPendingRows int64         `env:"JOB_MAX_PENDING_ROWS" envDefault:"20000000" range:"-1,10000000000" doc:"rows an API key may have pending across its active jobs; past it a submission gets 429 (-1: no limit; a key's own quota overrides it)"`
	JobMaxQueuedJobs  int           `env:"JOB_MAX_QUEUED_JOBS" envDefault:"100" range:"-1,1000000" doc:"active (queued or running) jobs an API key may have; past it a submission gets 429 (-1: no limit; a key's own quota overrides it)"`
	JobTimeout        time.Duration `env:"JOB_TIMEOUT" envDefault:"1h" range:"1s,168h" doc:"a job not finished this long after submission fails"`

	IdempotencyLease time.Duration `env:"IDEMPOTENCY_LEASE" envDefault:"30s" range:"1s,1m" doc:"lease of an in-flight Idempotency-Key claim, renewed while its request runs; a key whose process died is free again after it"`

	WorkerConcurrency     int           `env:"WORKER_CONCURRENCY" envDefault:"16" range:"1,1024" doc:"tasks a worker runs at once"`
	WorkerMetricsPort     int           `env:"WORKER_METRICS_PORT" envDefault:"9091" range:"0,65535" doc:"worker's /health and /metrics port (0: a free port, logged)"`
	WorkerQueues          string        `env:"WORKER_QUEUES" envDefault:"critical=6,default=3,batch=2,low=1" doc:"worker's queue weights, every queue listed (checked by tasks.ParseQueues)"`
	WorkerShutdownTimeout time.Duration `env:"WORKER_SHUTDOWN_TIMEOUT" envDefault:"20s" range:"1s,10m" doc:"how long a stopping worker waits for active tasks before pushing them back to their queues"`
	SchedulerMetricsPort  int           `env:"SCHEDULER_METRICS_PORT" envDefault:"9092" range:"0,65535" doc:"scheduler's /health and /metrics port (0: a free port, logged)"`

	WebhookSecret       string `env:"WEBHOOK_SECRET" redact:"mask" doc:"whsec_<base64> secret that signs job webhooks"`
	WebhookAllowPrivate bool   `env:"WEBHOOK_ALLOW_PRIVATE" envDefault:"false" doc:"allow webhook URLs on private/loopback addresses (tests, local development)"`
	AlertWebhookURL     string `env:"ALERT_WEBHOOK_URL" scheme:"http https" redact:"url" doc:"URL that receives low-confidence alerts (off when empty)"`

	OTLPEndpoint string `env:"OTEL_EXPORTER_OTLP_ENDPOINT" scheme:"http https" doc:"OTLP/HTTP endpoint for traces (off when empty)"`
	// GOGC and GOMEMLIMIT are read by the Go runtime from the process's environment (not from
	// .env); they are here for their documentation. TuneGC applies their defaults.
	GOGC       string `env:"GOGC" envDefault:"400" redact:"omit" doc:"Go's garbage-collector target in the api and the worker (Go's own default is 100; see TuneGC)"`
	GOMemLimit string `env:"GOMEMLIMIT" envDefault:"100MiB" redact:"omit" doc:"Go's soft memory limit in the api and the worker (when unset: 3/4 of the container's cgroup memory.max if there is one, else 100MiB)"`
	PprofAddr  string `env:"PPROF_ADDR" doc:"host:port of a net/http/pprof listener in the api and the worker, e.g. 127.0.0.1:6060 (off when empty; keep it off public interfaces)"`

	ReconcileInterval   time.Duration `env:"RECONCILE_INTERVAL" envDefault:"30s" range:"1s,24h" doc:"how often the scheduler enqueues maintenance:reconcile"`
	ReconcileGrace      time.Duration `env:"RECONCILE_GRACE" envDefault:"30s" range:"1s,24h" doc:"how long unfinished work may sit untouched before the reconciler enqueues it again"`
	RetentionInterval   time.Duration `env:"RETENTION_INTERVAL" envDefault:"1h" range:"1s,168h" doc:"how often the scheduler enqueues maintenance:retention"`
	PartitionInterval   time.Duration `env:"PARTITION_INTERVAL" envDefault:"1h" range:"1s,24h" doc:"how often the scheduler enqueues maintenance:partitions, which creates the day partitions of predictions and job_results ahead"`
	PartitionDaysAhead  int           `env:"PARTITION_DAYS_AHEAD" envDefault:"7" range:"1,366" doc:"days ahead of today that maintenance:partitions keeps a partition of predictions and job_results for"`
	ModelSyncInterval   time.Duration `env:"MODEL_SYNC_INTERVAL" envDefault:"1m" range:"1s,24h" doc:"how often maintenance:model-sync registers new artifacts and every process refreshes its models"`
	PredictionRetention time.Duration `env:"PREDICTION_RETENTION" envDefault:"720h" range:"1m,876000h" doc:"age past which persisted predictions are deleted"`
	JobRetention        time.Duration `env:"JOB_RETENTION" envDefault:"168h" range:"1m,876000h" doc:"age past which finished jobs, with their inputs and results, are deleted"`

	MonitoringUser       string `env:"MONITORING_USER" redact:"mask" doc:"HTTP Basic user of the asynqmon dashboard at /monitoring/ (off unless user and password are set)"`
	MonitoringPassword   string `env:"MONITORING_PASSWORD" redact:"mask" doc:"HTTP Basic password of the dashboard (at least 12 characters)"`
	MonitoringPrometheus string `env:"MONITORING_PROMETHEUS_URL" scheme:"http https" redact:"url" doc:"Prometheus URL the dashboard's charts query (charts off when empty)"`
	MonitoringReadOnly   bool   `env:"MONITORING_READ_ONLY" doc:"dashboard in view-only mode (default true when APP_ENV=production, else false)"`
}

// Var documents one environment variable.
type Var struct {
	Name    string
	Default string
	Doc     string
}

// Vars lists every variable the processes read, in the order of Config's fields, with its
// default and meaning, as Config's tags give them. Tests of the README and of the deployment
// files check the variables they name against this list. Read it; never change it.
var Vars = varsOf(fields)

// Known reports whether name is a variable of Vars.
func Known(name string) bool {
	return slices.ContainsFunc(Vars, func(v Var) bool { return v.Name == name })
}

// Load reads the configuration through getenv (a blank value counts as unset), with the
// defaults of Config's tags, and validates it. All problems are returned together, each
// naming its variable ("PORT: must be between 1 and 65535, got 70000").
func Load(getenv func(string) string) (Config, error) {
	var c Config
	p := load(&c, getenv)
	if !p.failed("CACHE_REDIS_URL") && c.CacheRedisURL == "" {
		c.CacheRedisURL = c.RedisURL
	}
	if c.RateBurst == 0 && c.RateLimit > 0 {
		c.RateBurst = max(1, int(2*c.RateLimit))
	}
	if strings.TrimSpace(getenv("MONITORING_READ_ONLY")) == "" {
		c.MonitoringReadOnly = c.Env == "production" // a production dashboard changes nothing unless asked to
	}
	c.check(p)
	return c, p.err()
}

// FromEnv loads the configuration as the processes do at start: getenv first, then the .env
// file of the working directory when there is one. Its error reads "config:" and then every
// problem, one per line.
func FromEnv(getenv func(string) string) (Config, error) {
	getenv, err := WithDotEnv(getenv, ".env")
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := Load(getenv)
	if err != nil {
		return c, fmt.Errorf("config:\n%w", err)
	}
	return c, nil
}

// check applies the rules that the tags cannot state.
func (c *Config) check(p *problems) {
	if c.SecretKey != "" && len(c.SecretKey) < 32 {
		p.add("SECRET_KEY", "must be at least 32 characters, got %d", len(c.SecretKey))
	} else if c.SecretKey == "" && c.Env == "production" {
		p.add("SECRET_KEY", "is required when APP_ENV=production")
	}
	c.APIKeys = auth.GroupStaticEntries(c.APIKeys)
	for i, k := range c.APIKeys {
		sk, err := auth.ParseStaticKey(k)
		if err != nil {
			p.add("API_KEYS", "entry %d: %v", i+1, err) // never the entry itself: it holds a secret
			break
		}
		if len(sk.Key) < 16 {
			p.add("API_KEYS", "every key must be at least 16 characters")
			break
		}
	}
	if c.AdmissionMinLimit > c.AdmissionMaxLimit {
		p.add("ADMISSION_MIN_LIMIT", "must not exceed ADMISSION_MAX_LIMIT (%d), got %d", c.AdmissionMaxLimit, c.AdmissionMinLimit)
	} else if c.AdmissionInitialLimit < c.AdmissionMinLimit || c.AdmissionInitialLimit > c.AdmissionMaxLimit {
		p.add("ADMISSION_INITIAL_LIMIT", "must be between ADMISSION_MIN_LIMIT (%d) and ADMISSION_MAX_LIMIT (%d), got %d",
			c.AdmissionMinLimit, c.AdmissionMaxLimit, c.AdmissionInitialLimit)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p.add("ALLOWED_ORIGINS", "%q is not an origin like https://app.example.com", o)
		}
	}
	if c.WebhookSecret != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(c.WebhookSecret, "whsec_"))
		switch {
		case !strings.HasPrefix(c.WebhookSecret, "whsec_"):
			p.add("WEBHOOK_SECRET", "must start with whsec_")
		case err != nil || len(key) < 24 || len(key) > 64:
			p.add("WEBHOOK_SECRET", "must be whsec_ followed by the base64 of 24 to 64 random bytes")
		}
	}
	if c.PprofAddr != "" {
		if _, port, err := net.SplitHostPort(c.PprofAddr); err != nil || port == "" {
			p.add("PPROF_ADDR", "%q is not a host:port like 127.0.0.1:6060", c.PprofAddr)
		}
	}
	if (c.MonitoringUser == "") != (c.MonitoringPassword == "") {
		p.add("MONITORING_PASSWORD", "MONITORING_USER and MONITORING_PASSWORD go together")
	} else if c.MonitoringPassword != "" && len(c.MonitoringPassword) < 12 {
		p.add("MONITORING_PASSWORD", "must be at least 12 characters")
	}
}

// Redacted returns the configuration as key/value pairs for the start-up log line: every
// variable under its lower-cased name, shown as its redact tag says (secrets masked,
// passwords removed from URLs).
func (c Config) Redacted() []any {
	return redacted(c)
}

// RedactURL returns raw with its password masked, for logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// problems collects the problems of a configuration, the first of each variable only: a
// value that cannot be read is not checked further.
type problems struct {
	errs []error
	keys map[string]bool
}

func (p *problems) add(key, format string, args ...any) {
	p.addErr(key, fmt.Errorf(format, args...))
}

func (p *problems) addErr(key string, err error) {
	if p.keys == nil {
		p.keys = map[string]bool{}
	}
	if p.keys[key] && key != "" {
		return
	}
	p.keys[key] = true
	if key == "" {
		p.errs = append(p.errs, err)
		return
	}
	p.errs = append(p.errs, fmt.Errorf("%s: %w", key, err))
}

func (p *problems) failed(key string) bool { return p.keys[key] }

func (p *problems) err() error { return errors.Join(p.errs...) }
