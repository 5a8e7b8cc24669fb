package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rssBytes reads VmRSS of pid from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := readRSS(pid)
	require.NoError(t, err)
	return n
}

func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// rssWatch samples the RSS of a process every 20 ms until stopped, keeping the peak.
type rssWatch struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS(t *testing.T, pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if r, err := readRSS(pid); err == nil && r > w.peak.Load() {
				w.peak.Store(r)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// Peak stops the sampling and returns the highest RSS seen.
func (w *rssWatch) Peak() int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return w.peak.Load()
}

// flood sends n requests made by mk from conc goroutines and counts the statuses.
func flood(t *testing.T, n, conc int, mk func(i int) *http.Request) map[int]int {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				resp, err := client.Do(mk(i))
				code := -1
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codes
}

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "guess-" + hex.EncodeToString(b)
}

// Issue 18 item 3: random API keys and a burst of distinct Idempotency-Keys cannot grow the
// api's memory without bound, and the keys cost a bounded number of Postgres lookups.
func TestUnauthenticatedTrafficIsBounded(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true, env: map[string]string{"LOG_LEVEL": "warn"}})
	pid := s.procs["api"].PID()
	metrics := func() string {
		text, err := tryScrape(s.base + "/metrics")
		require.NoError(t, err)
		return text
	}
	lookups := func(text string) float64 { return sample(text, "predq_auth_lookups_total", nil) }
	t.Logf("api RSS at start: %.1f MB", float64(rssBytes(t, pid))/1e6)
	watch := watchRSS(t, pid)
	t.Cleanup(func() { watch.Peak() })

	// 20,000 random keys from one address: past the failed-authentication burst the address
	// gets 429 without a lookup.
	start := time.Now()
	codes := flood(t, 20_000, 32, func(int) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, s.base+"/api/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+randomKey())
		return req
	})
	elapsed := time.Since(start)
	require.Equal(t, 20_000, codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests], "%v", codes)
	require.Greater(t, codes[http.StatusTooManyRequests], 15_000, "%v", codes)
	after := metrics()
	// AUTH_FAIL_BURST 20 and AUTH_FAIL_RATE 5/s.
	bound := 20 + 5*elapsed.Seconds() + 1
	require.LessOrEqual(t, lookups(after), bound, "lookups over %s", elapsed)
	t.Logf("random keys: %v in %s, %v lookups; heap in use %.1f MB", codes, elapsed.Round(time.Millisecond),
		lookups(after), sample(after, "go_memstats_heap_inuse_bytes", nil)/1e6)

	// 10,000 distinct Idempotency-Keys, 256 at a time, with a valid key.
	body := `{"features":[` + strings.Repeat("0.5,", 59) + `0.5]}`
	start = time.Now()
	codes = flood(t, 10_000, 256, func(i int) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, s.base+"/api/v1/predict", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("burst-%06d", i))
		return req
	})
	t.Logf("idempotency burst: %v in %s", codes, time.Since(start).Round(time.Millisecond))
	for code := range codes {
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable, http.StatusTooManyRequests}, code, "%v", codes)
	}
	require.Greater(t, codes[http.StatusOK], 0, "%v", codes)

	peak := watch.Peak()
	text := metrics()
	t.Logf("api RSS: peak %.1f MB, now %.1f MB; heap in use %.1f MB", float64(peak)/1e6, float64(rssBytes(t, pid))/1e6,
		sample(text, "go_memstats_heap_inuse_bytes", nil)/1e6)
	require.LessOrEqual(t, peak, int64(150e6), "the api's RSS stays within 150 MB")
}

// Issue 18 item 7: two api processes on one Redis admit one key's requests at the one rate,
// not twice it.
func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true, env: map[string]string{"RATE_LIMIT": "5", "RATE_BURST": "5", "LOG_LEVEL": "warn"}})
	first := s.base
	s.env["API2_PORT"] = strconv.Itoa(freePort(t))
	s.start("api2", "PORT="+s.env["API2_PORT"], "GRPC_PORT=0")
	s.awaitUp("api2", "API2_PORT", "/health/live")
	second := "http://127.0.0.1:" + s.env["API2_PORT"]

	const window = 3 * time.Second
	start := time.Now()
	codes := map[string]map[int]int{first: {}, second: {}}
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; time.Since(start) < window; i++ {
		base := first
		if i%2 == 1 {
			base = second
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[base][resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			require.NotEmpty(t, resp.Header.Get("Retry-After"))
			require.Equal(t, "5", resp.Header.Get("RateLimit-Limit"))
		}
		time.Sleep(5 * time.Millisecond) // about 100 requests a second, each api half of them
	}
	elapsed := time.Since(start)
	admitted := codes[first][http.StatusOK] + codes[second][http.StatusOK]
	t.Logf("over %s: %v (first), %v (second); %d admitted", elapsed.Round(time.Millisecond), codes[first], codes[second], admitted)
	// One shared limit admits at most the burst plus the rate over the window; per-process
	// buckets would admit twice that.
	require.LessOrEqual(t, float64(admitted), 5+5*elapsed.Seconds()+1)
	require.GreaterOrEqual(t, float64(admitted), 5+5*window.Seconds()-2)
	require.Greater(t, codes[first][http.StatusOK], 0)
	require.Greater(t, codes[second][http.StatusOK], 0)

	// Redis gone: each process limits on its own, and still answers.
	s.redis.Stop()
	time.Sleep(time.Second) // let both buckets refill past the burst: 5 tokens in 1 s
	got := map[int]int{}
	for range 12 {
		req, _ := http.NewRequest(http.MethodGet, first+"/api/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		got[resp.StatusCode]++
	}
	require.Equal(t, 12, got[http.StatusOK]+got[http.StatusTooManyRequests], "%v", got)
	require.GreaterOrEqual(t, got[http.StatusTooManyRequests], 5, "the local bucket (burst 5) still limits: %v", got)
	text, err := tryScrape(first + "/metrics")
	require.NoError(t, err)
	require.Equal(t, 1.0, sample(text, "predq_ratelimit_fallback_active", nil))
}
