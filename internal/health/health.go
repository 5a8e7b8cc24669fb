// Package health runs dependency checks and decides readiness.
package health

import (
	"context"
	"sync"
	"time"

	"github.com/predq/predq/internal/modelreg"
)

// Status values of a check and of the whole report.
const (
	StatusOK          = "ok"
	StatusDown        = "down"
	StatusReady       = "ready"
	StatusDegraded    = "degraded"
	StatusUnavailable = "unavailable"
)

// CheckResult is the outcome of one dependency check.
type CheckResult struct {
	Status    string  `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	Detail    any     `json:"detail,omitempty"`
}

// Report is the readiness body. Ready is false only when the process cannot do its main work.
type Report struct {
	Status    string                 `json:"status"`
	Ready     bool                   `json:"-"`
	Checks    map[string]CheckResult `json:"checks"`
	CheckedAt time.Time              `json:"checked_at"`
}

// Checker runs the readiness checks of the api: Postgres, Redis (queue and cache) and the
// loaded models. The process is ready when it has a model and at least one of Postgres and
// Redis answers: one degraded store must not take every replica out of service.
type Checker struct {
	Postgres func(ctx context.Context) error // nil: not configured
	Redis    func(ctx context.Context) error
	Models   func() (loaded []string, failures []modelreg.LoadFailure)
	Timeout  time.Duration // per check; default 2s
}

// Ready runs every check concurrently and builds the report.
func (c *Checker) Ready(ctx context.Context) Report {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	rep := Report{Checks: map[string]CheckResult{}, CheckedAt: time.Now().UTC()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		if f == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			err := f(cctx)
			res := CheckResult{Status: StatusOK, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				res.Status, res.Error = StatusDown, err.Error()
			}
			mu.Lock()
			rep.Checks[name] = res
			mu.Unlock()
		}()
	}
	run("postgres", c.Postgres)
	run("redis", c.Redis)
	wg.Wait()

	modelsOK := false
	if c.Models != nil {
		loaded, failures := c.Models()
		res := CheckResult{Status: StatusOK, Detail: map[string]any{"loaded": loaded, "failures": failures}}
		if len(loaded) == 0 {
			res.Status, res.Error = StatusDown, "no model loaded"
		} else if len(failures) > 0 {
			res.Error = "some artifacts were refused"
		}
		modelsOK = len(loaded) > 0
		rep.Checks["models"] = res
	}
	pgOK := rep.Checks["postgres"].Status == StatusOK
	redisOK := rep.Checks["redis"].Status == StatusOK
	switch {
	case !modelsOK || (!pgOK && !redisOK):
		rep.Status, rep.Ready = StatusUnavailable, false
	case !pgOK || !redisOK || rep.Checks["models"].Error != "":
		rep.Status, rep.Ready = StatusDegraded, true
	default:
		rep.Status, rep.Ready = StatusReady, true
	}
	return rep
}
