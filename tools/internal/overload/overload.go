// Package overload drives the api's synchronous predict route past what it sustains and
// records what admission control does. Three closed-loop points: one client (the unloaded
// latency), Conns clients (the peak goodput), then Factor × Conns clients, half on an
// interactive key and half on a bulk one, paced together to Factor × the peak's goodput: each
// client sends its next request when the last is answered and the schedule allows, and a 503
// does not slow it down (it ignores Retry-After), so the offered load stays at Factor × what
// the api sustains.
// tools/e2e asserts its properties; tools/bench reports its figures.
package overload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one measurement.
type Config struct {
	BaseURL        string // the api, http://host:port
	InteractiveKey string // an API key of class interactive
	BulkKey        string // an API key of class bulk
	// Conns is the closed loop's clients at the peak; the overload runs Factor times as many
	// (half interactive, half bulk). The unloaded point runs one.
	Conns  int
	Factor int
	// Unloaded, Peak and Overload are the durations of the three points.
	Unloaded, Peak, Overload time.Duration
	// Sample is called every 250 ms during the overload point (the api's RSS, say); nil: none.
	Sample func()
}

// Point is what one closed-loop point measured.
type Point struct {
	Conns    int                    `json:"conns"`
	Seconds  float64                `json:"seconds"`
	Sent     int64                  `json:"sent"`
	OK       int64                  `json:"ok"`       // 200s
	OKPerSec float64                `json:"ok_per_s"` // goodput
	P50MS    float64                `json:"p50_ms"`   // of the 200s
	P99MS    float64                `json:"p99_ms"`   // of the 200s
	Rejected int64                  `json:"rejected"` // 503 and 429
	Other    int64                  `json:"other"`    // any other status, or a transport error
	ByClass  map[string]*ClassStats `json:"by_class"`
}

// ClassStats splits a point by the key's class.
type ClassStats struct {
	Sent     int64   `json:"sent"`
	OK       int64   `json:"ok"`
	Rejected int64   `json:"rejected"`
	P99MS    float64 `json:"p99_ms"`
	// ShedFraction is Rejected / Sent.
	ShedFraction float64 `json:"shed_fraction"`
}

// Report is a whole measurement.
type Report struct {
	Unloaded, Peak, Overload Point
	// Ratios of the overload point to the unloaded and peak points.
	P99Ratio     float64 `json:"p99_ratio"`     // overload p99 of the 200s / unloaded p99
	GoodputRatio float64 `json:"goodput_ratio"` // overload 200s per second / peak 200s per second
	OfferedRatio float64 `json:"offered_ratio"` // overload requests sent per second / peak 200s per second
	// Violations describes every answer that broke the rules: a rejection that is not a
	// 503/429 problem+json with a sane Retry-After, a 200 without the request's id, any
	// other status. Empty when all is well.
	Violations []string `json:"violations,omitempty"`
	// RetryAfter counts the Retry-After values of the rejections, in seconds.
	RetryAfter map[int]int64 `json:"retry_after"`
	// Answered are the request ids of the 200s that computed their answer (not cached):
	// each must be stored.
	Answered []string `json:"-"`
	Cached   int64    `json:"cached"`
}

// Run measures the three points in turn.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Conns < 1 || cfg.Factor < 1 {
		return Report{}, fmt.Errorf("overload: conns %d and factor %d must be ≥ 1", cfg.Conns, cfg.Factor)
	}
	r := &run{cfg: cfg, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 4 * cfg.Conns * cfg.Factor, MaxConnsPerHost: 0,
	}}, rep: Report{RetryAfter: map[int]int64{}}}
	defer r.client.CloseIdleConnections()
	var err error
	if r.rep.Unloaded, err = r.point(ctx, "unloaded", 1, cfg.Unloaded, 0, nil); err != nil {
		return r.rep, err
	}
	if r.rep.Peak, err = r.point(ctx, "peak", cfg.Conns, cfg.Peak, 0, nil); err != nil {
		return r.rep, err
	}
	rate := float64(cfg.Factor) * r.rep.Peak.OKPerSec
	if r.rep.Overload, err = r.point(ctx, "overload", cfg.Conns*cfg.Factor, cfg.Overload, rate, cfg.Sample); err != nil {
		return r.rep, err
	}
	rep := r.rep
	if rep.Unloaded.P99MS > 0 {
		rep.P99Ratio = rep.Overload.P99MS / rep.Unloaded.P99MS
	}
	if rep.Peak.OKPerSec > 0 {
		rep.GoodputRatio = rep.Overload.OKPerSec / rep.Peak.OKPerSec
		rep.OfferedRatio = float64(rep.Overload.Sent) / rep.Overload.Seconds / rep.Peak.OKPerSec
	}
	return rep, nil
}

type run struct {
	cfg    Config
	client *http.Client
	seq    atomic.Int64 // makes every input and request id distinct

	mu  sync.Mutex
	rep Report
}

func (r *run) violation(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rep.Violations) < 50 {
		r.rep.Violations = append(r.rep.Violations, fmt.Sprintf(format, args...))
	}
}

// body is a predict request whose features encode n, so that no two are alike (a cache hit
// is not stored, and the loss check needs every answer stored).
func body(n int64) []byte {
	f := make([]float64, 60)
	for j := range f {
		f[j] = float64((j*37)%100) / 100
	}
	f[0] = float64(n%1000) / 1000
	f[1] = float64((n/1000)%1000) / 1000
	f[2] = float64((n/1_000_000)%1000) / 1000
	b, _ := json.Marshal(map[string]any{"features": f})
	return b
}

// point runs conns closed-loop clients for d. A rate (requests per second) paces them
// together and puts every second one on the bulk key; 0: unpaced, all interactive.
func (r *run) point(ctx context.Context, name string, conns int, d time.Duration, rate float64, sample func()) (Point, error) {
	mixed := rate > 0
	var slot atomic.Int64 // the paced schedule's next slot
	type client struct {
		class                             string
		key                               string
		lat                               []time.Duration
		sent, ok, rejected, other, cached int64
		ids                               []string
	}
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = &client{class: "interactive", key: r.cfg.InteractiveKey}
		if mixed && i%2 == 1 {
			clients[i] = &client{class: "bulk", key: r.cfg.BulkKey}
		}
	}
	start := time.Now()
	deadline := start.Add(d)
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	if sample != nil {
		sampler.Go(func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					sample()
				}
			}
		})
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if mixed {
					at := start.Add(time.Duration(float64(slot.Add(1)-1) / rate * float64(time.Second)))
					if wait := time.Until(at); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return
						}
					}
					if !time.Now().Before(deadline) {
						return
					}
				}
				n := r.seq.Add(1)
				id := fmt.Sprintf("ovl-%s-%d", name, n)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.BaseURL+"/api/v1/predict", bytes.NewReader(body(n)))
				if err != nil {
					return
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+c.key)
				req.Header.Set("X-Request-ID", id)
				t0 := time.Now()
				resp, err := r.client.Do(req)
				c.sent++
				if err != nil {
					if ctx.Err() == nil {
						c.other++
						r.violation("%s: transport error: %v", id, err)
					}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lat := time.Since(t0)
				switch resp.StatusCode {
				case http.StatusOK:
					var out struct {
						RequestID string `json:"request_id"`
						Cached    bool   `json:"cached"`
					}
					if err := json.Unmarshal(b, &out); err != nil || out.RequestID != id {
						r.violation("%s: 200 without its request id: %.200s", id, b)
					}
					c.ok++
					c.lat = append(c.lat, lat)
					if out.Cached {
						c.cached++
					} else {
						c.ids = append(c.ids, id)
					}
				case http.StatusServiceUnavailable, http.StatusTooManyRequests:
					c.rejected++
					r.checkRejection(id, resp, b)
				default:
					c.other++
					r.violation("%s: status %d: %.200s", id, resp.StatusCode, b)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	secs := time.Since(start).Seconds()
	p := Point{Conns: conns, Seconds: secs, ByClass: map[string]*ClassStats{}}
	var all []time.Duration
	byClass := map[string][]time.Duration{}
	for _, c := range clients {
		p.Sent += c.sent
		p.OK += c.ok
		p.Rejected += c.rejected
		p.Other += c.other
		all = append(all, c.lat...)
		byClass[c.class] = append(byClass[c.class], c.lat...)
		cs := p.ByClass[c.class]
		if cs == nil {
			cs = &ClassStats{}
			p.ByClass[c.class] = cs
		}
		cs.Sent += c.sent
		cs.OK += c.ok
		cs.Rejected += c.rejected
		r.mu.Lock()
		r.rep.Answered = append(r.rep.Answered, c.ids...)
		r.rep.Cached += c.cached
		r.mu.Unlock()
	}
	for class, cs := range p.ByClass {
		cs.P99MS = quantileMS(byClass[class], 0.99)
		if cs.Sent > 0 {
			cs.ShedFraction = float64(cs.Rejected) / float64(cs.Sent)
		}
	}
	p.OKPerSec = float64(p.OK) / secs
	p.P50MS = quantileMS(all, 0.50)
	p.P99MS = quantileMS(all, 0.99)
	return p, ctx.Err()
}

// checkRejection holds a 503/429 to its contract: problem+json whose status is the
// response's, and a Retry-After of whole seconds between 1 and 60.
func (r *run) checkRejection(id string, resp *http.Response, b []byte) {
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		r.violation("%s: %d with Content-Type %q", id, resp.StatusCode, ct)
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Status != resp.StatusCode || p.Type == "" || p.Detail == "" {
		r.violation("%s: %d body is not its problem: %.200s", id, resp.StatusCode, b)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		r.violation("%s: %d with Retry-After %q", id, resp.StatusCode, resp.Header.Get("Retry-After"))
		return
	}
	r.mu.Lock()
	r.rep.RetryAfter[ra]++
	r.mu.Unlock()
}

func quantileMS(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)
	return float64(s[max(0, i)].Microseconds()) / 1000
}
