// Package redisdb builds Redis clients from the URLs of the configuration: a single server,
// Sentinel (failover) or Cluster.
//
//	redis://[user:password@]host:port/db        single server (rediss:// for TLS)
//	redis-sentinel://[:password@]h1:p,h2:p/db?master=NAME
//	redis-cluster://[:password@]h1:p,h2:p       (asynq's Lua scripts need hash-tagged keys,
//	                                             which asynq uses; the cache works unchanged)
package redisdb

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/telemetry"
)

// Modes of Options.
const (
	ModeSingle   = "single"
	ModeSentinel = "sentinel"
	ModeCluster  = "cluster"
)

// Options is a parsed Redis URL.
type Options struct {
	Mode       string
	Addrs      []string
	DB         int
	Username   string
	Password   string
	MasterName string
	TLS        bool
}

// ParseURL parses one of the URL forms of the package documentation.
func ParseURL(raw string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Options{}, fmt.Errorf("redis url: %w", err)
	}
	var o Options
	switch u.Scheme {
	case "redis":
		o.Mode = ModeSingle
	case "rediss":
		o.Mode, o.TLS = ModeSingle, true
	case "redis-sentinel":
		o.Mode = ModeSentinel
	case "redis-cluster":
		o.Mode = ModeCluster
	default:
		return Options{}, fmt.Errorf("redis url: unknown scheme %q", u.Scheme)
	}
	for _, a := range strings.Split(u.Host, ",") {
		if a == "" {
			continue
		}
		if !strings.Contains(a, ":") {
			a += ":6379"
		}
		o.Addrs = append(o.Addrs, a)
	}
	if len(o.Addrs) == 0 {
		return Options{}, fmt.Errorf("redis url: no host")
	}
	if o.Mode == ModeSingle && len(o.Addrs) > 1 {
		return Options{}, fmt.Errorf("redis url: several hosts need redis-sentinel:// or redis-cluster://")
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if o.DB, err = strconv.Atoi(p); err != nil || o.DB < 0 {
			return Options{}, fmt.Errorf("redis url: database %q is not a number", p)
		}
		if o.Mode == ModeCluster && o.DB != 0 {
			return Options{}, fmt.Errorf("redis url: Redis Cluster has only database 0")
		}
	}
	q := u.Query()
	o.MasterName = q.Get("master")
	if o.Mode == ModeSentinel && o.MasterName == "" {
		return Options{}, fmt.Errorf("redis url: redis-sentinel:// needs ?master=NAME")
	}
	if q.Get("tls") == "true" {
		o.TLS = true
	}
	return o, nil
}

// Universal returns go-redis options for the URL with the given per-call timeout (0 keeps
// go-redis's defaults).
func (o Options) Universal(timeout time.Duration) *redis.UniversalOptions {
	uo := &redis.UniversalOptions{
		Addrs:    o.Addrs,
		DB:       o.DB,
		Username: o.Username,
		Password: o.Password,
	}
	if o.Mode == ModeSentinel {
		uo.MasterName = o.MasterName
		uo.SentinelPassword = o.Password
	}
	if o.Mode == ModeCluster {
		uo.IsClusterMode = true
	}
	if o.TLS {
		uo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if timeout > 0 {
		uo.DialTimeout = max(timeout, 200*time.Millisecond)
		uo.ReadTimeout = timeout
		uo.WriteTimeout = timeout
		uo.MaxRetries = -1 // a slow cache is skipped, not retried
	}
	return uo
}

// ClusterReloadInterval is how often a Cluster client asks for the slot map while it is in
// use. go-redis reloads it on a MOVED answer, but not when a master stops answering: with
// its default (a minute) a client would keep dialling a dead master that long after its
// replica took over. Two seconds is one CLUSTER SLOTS per client every two seconds.
const ClusterReloadInterval = 2 * time.Second

// ClusterOptions returns go-redis Cluster options for the URL (see Universal), with the slot
// map reloaded every ClusterReloadInterval.
func (o Options) ClusterOptions(timeout time.Duration) *redis.ClusterOptions {
	co := o.Universal(timeout).Cluster()
	co.ClusterStateReloadInterval = ClusterReloadInterval
	return co
}

// Open returns a client for raw (see ParseURL), traced by the process's tracer provider
// (otel's global, set by telemetry.SetGlobal). It does not contact the server.
//
// When that provider records no span (telemetry.RecordsNothing: no exporter), the client has
// no tracing hook at all. A command's span is a leaf that no log or task header refers to,
// and the hook would build its name and attributes only to drop them: every command of a
// pipeline formatted as text, and the caller's file and line (about a quarter of the api's
// CPU spent on the prediction cache, see the README's Benchmarks).
func Open(raw string, timeout time.Duration) (redis.UniversalClient, error) {
	return open(raw, timeout, otel.GetTracerProvider())
}

func open(raw string, timeout time.Duration, tp trace.TracerProvider) (redis.UniversalClient, error) {
	o, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	var c redis.UniversalClient
	if o.Mode == ModeCluster {
		c = redis.NewClusterClient(o.ClusterOptions(timeout))
	} else {
		c = redis.NewUniversalClient(o.Universal(timeout))
	}
	if telemetry.RecordsNothing(tp) {
		return c, nil
	}
	if err := redisotel.InstrumentTracing(c, redisotel.WithTracerProvider(tp)); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	return c, nil
}
