// Package tasks is the asynq side of predq: task types and queues, payloads and their
// constructors, the enqueuers that the features' Enqueuer interfaces ask for (PersistClient
// for the prediction feature's Recorders, JobClient for batch jobs), and the worker's
// handlers, middleware and logger. It is an adapter: when to enqueue, and what to do when the
// queue fails, is the features' policy. It is the only package, with cmd/worker and
// cmd/scheduler, that imports asynq.
//
// Persistence of synchronous predictions (DESIGN section 16; README, "How it holds together"):
// the api's prediction.PostgresFirst or prediction.QueueFirst group-commits the records of
// concurrent requests and enqueues a batch through PersistClient as one prediction:persist
// task (its payload the JSON array of the records) when Postgres cannot take it, or always
// with PERSIST_PATH=queue; the worker's prediction:persist handler writes a task's records
// with one Insert (ON CONFLICT (id) DO NOTHING when replayed: each record carries the server
// id that the api gave its prediction).
package tasks

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/redisdb"
)

// Task types ("noun:verb").
const (
	// TypePredictionPersist stores a batch of answered predictions.
	TypePredictionPersist = "prediction:persist"
	// TypeAlertLowConfidence raises the alert of one low-confidence prediction.
	TypeAlertLowConfidence = "alert:low_confidence"
	// TypeJobRun splits a batch job into chunks (reserved for the batch-job issue).
	TypeJobRun = "job:run"
	// TypeJobChunk runs one chunk of a batch job (reserved).
	TypeJobChunk = "job:chunk"
	// TypeWebhookDeliver delivers one job webhook (reserved).
	TypeWebhookDeliver = "webhook:deliver"
)

// Queues (DESIGN section 5).
const (
	QueueCritical = "critical" // alerts, webhooks
	QueueDefault  = "default"  // persistence
	QueueBatch    = "batch"    // job runs and chunks
	QueueLow      = "low"      // maintenance
)

// DefaultQueues returns the default queue weights: critical 6, default 3, batch 2, low 1.
func DefaultQueues() map[string]int {
	return map[string]int{QueueCritical: 6, QueueDefault: 3, QueueBatch: 2, QueueLow: 1}
}

// ParseQueues parses queue weights written as "critical=6,default=3,batch=2,low=1". Every
// queue of this package must be listed with a weight of at least 1 (a worker that skips a queue
// would leave its tasks undone); unknown queue names are refused.
func ParseQueues(s string) (map[string]int, error) {
	known := []string{QueueCritical, QueueDefault, QueueBatch, QueueLow}
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("queue weights: %q is not name=weight", part)
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("queue weights: unknown queue %q (want %s)", name, strings.Join(known, ", "))
		}
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("queue weights: weight of %s must be a whole number in 1..1000, got %q", name, w)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("queue weights: %s listed twice", name)
		}
		out[name] = n
	}
	for _, q := range known {
		if _, ok := out[q]; !ok {
			return nil, fmt.Errorf("queue weights: queue %s is missing", q)
		}
	}
	return out, nil
}

// ClusterConnOpt is asynq's connection to a Redis Cluster: asynq's own RedisClusterClientOpt
// keeps go-redis's default slot-map reload (a minute), so that after a master failover its
// clients would dial the dead master for up to a minute; this one reloads the map every
// redisdb.ClusterReloadInterval.
type ClusterConnOpt struct{ Options *redis.ClusterOptions }

// MakeRedisClient returns a *redis.ClusterClient (asynq.RedisConnOpt).
func (c ClusterConnOpt) MakeRedisClient() any {
	o := *c.Options // NewClusterClient fills in defaults: each client gets its own copy
	return redis.NewClusterClient(&o)
}

// RedisConnOpt returns asynq's connection options for o: RedisClientOpt for a single server,
// RedisFailoverClientOpt for Sentinel, ClusterConnOpt for Cluster. timeout, when > 0,
// bounds dialling, reads and writes (asynq's defaults otherwise).
func RedisConnOpt(o redisdb.Options, timeout time.Duration) asynq.RedisConnOpt {
	var tlsCfg *tls.Config
	if o.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	var dial time.Duration
	if timeout > 0 {
		dial = max(timeout, 200*time.Millisecond)
	}
	switch o.Mode {
	case redisdb.ModeSentinel:
		return asynq.RedisFailoverClientOpt{
			MasterName: o.MasterName, SentinelAddrs: o.Addrs, SentinelPassword: o.Password,
			Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: dial, ReadTimeout: timeout, WriteTimeout: timeout, TLSConfig: tlsCfg,
		}
	case redisdb.ModeCluster:
		return ClusterConnOpt{Options: o.ClusterOptions(timeout)}
	default:
		addr := ""
		if len(o.Addrs) > 0 {
			addr = o.Addrs[0]
		}
		return asynq.RedisClientOpt{
			Addr: addr, Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: dial, ReadTimeout: timeout, WriteTimeout: timeout, TLSConfig: tlsCfg,
		}
	}
}
