package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The load generator is closed-loop: each of -conns connections sends one request, reads the
// whole answer, and sends the next, until -duration has passed or -max requests were sent.
// It speaks HTTP/1.1 itself over one keep-alive TCP connection per worker, with raw system
// calls (rawIO): 16-22 µs of CPU per request on the sessions' 2-core virtual machines, so the
// generator, on its own core, stays below a server that answers 30k requests per second on
// the other (net/http's client costs several times more). It only dials loopback addresses.

// loadConfig is one measurement point.
type loadConfig struct {
	Addr     string        // host:port on loopback
	Path     string        // request path
	Key      string        // API key (Authorization: Bearer), empty for none
	Conns    int           // connections, one goroutine each
	Duration time.Duration // how long requests are started
	Max      int64         // at most this many requests in all
	Bodies   *bodySource   // request bodies
	// Latencies asks for every answered request's latency in the result (LatenciesUS), so
	// that the rounds of one point can be merged.
	Latencies bool
}

// loadResult is what one point measured. Latencies are in milliseconds.
type loadResult struct {
	Conns    int     `json:"conns"`
	Requests int64   `json:"requests"` // answered with a 2xx
	Errors   int64   `json:"errors"`   // transport errors and non-2xx answers
	Cached   int64   `json:"cached"`   // answers that said "cached":true
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// CPUPerRequestUS is the load generator's own CPU time (user + system) per answered
	// request: the generator shares the machine with what it measures.
	CPUPerRequestUS float64 `json:"load_cpu_us_per_req"`
	// FirstError describes the first error seen, if any.
	FirstError string `json:"first_error,omitempty"`
	// LatenciesUS holds the latency of every answered request in microseconds, sorted,
	// when asked for (loadConfig.Latencies); the rounds of a point are merged from them.
	LatenciesUS []int64 `json:"latencies_us,omitempty"`
}

// runLoad measures one point.
func runLoad(cfg loadConfig) (loadResult, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return loadResult{}, fmt.Errorf("load: address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return loadResult{}, fmt.Errorf("load: %q is not a loopback address", cfg.Addr)
	}
	if cfg.Conns < 1 || cfg.Duration <= 0 || cfg.Max < 1 {
		return loadResult{}, errors.New("load: conns, duration and max must be positive")
	}
	var (
		sent, okCount, errCount, cachedCount atomic.Int64
		firstErr                             atomic.Value
		wg                                   sync.WaitGroup
	)
	lat := make([][]time.Duration, cfg.Conns)
	cpu0 := processCPU()
	start := time.Now()
	end := start.Add(cfg.Duration)
	for w := range cfg.Conns {
		wg.Go(func() {
			c := &conn{addr: cfg.Addr}
			defer c.close()
			samples := make([]time.Duration, 0, 4096)
			defer func() { lat[w] = samples }()
			var req []byte
			for time.Now().Before(end) && sent.Add(1) <= cfg.Max {
				body := cfg.Bodies.next()
				req = appendRequest(req[:0], cfg.Addr, cfg.Path, cfg.Key, body)
				t0 := time.Now()
				status, cached, err := c.roundTrip(req)
				d := time.Since(t0)
				if err != nil || status/100 != 2 {
					errCount.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d", status)
					}
					firstErr.CompareAndSwap(nil, err.Error())
					c.close()
					continue
				}
				okCount.Add(1)
				if cached {
					cachedCount.Add(1)
				}
				samples = append(samples, d)
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := loadResult{
		Conns: cfg.Conns, Requests: okCount.Load(), Errors: errCount.Load(), Cached: cachedCount.Load(),
		Seconds: elapsed.Seconds(),
	}
	r.summarize(all, float64(cpu.Nanoseconds())/1000)
	if e, ok := firstErr.Load().(string); ok {
		r.FirstError = e
	}
	if cfg.Latencies {
		r.LatenciesUS = make([]int64, len(all))
		for i, d := range all {
			r.LatenciesUS[i] = d.Microseconds()
		}
	}
	return r, nil
}

// mergeRounds is one result for the rounds of a point: their requests over their summed
// time, and the quantiles of all their latencies (each round must carry LatenciesUS; the
// merged result does not).
func mergeRounds(rounds []loadResult) loadResult {
	var m loadResult
	var lat []time.Duration
	var cpuUS float64
	for _, r := range rounds {
		m.Conns = r.Conns
		m.Requests += r.Requests
		m.Errors += r.Errors
		m.Cached += r.Cached
		m.Seconds += r.Seconds
		cpuUS += r.CPUPerRequestUS * float64(r.Requests)
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		for _, us := range r.LatenciesUS {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	slices.Sort(lat)
	m.summarize(lat, cpuUS)
	return m
}

// summarize sets what r's requests, seconds, sorted latencies and load generator CPU
// (microseconds in all) give: the rate, the quantiles, the maximum and the CPU per request.
func (r *loadResult) summarize(sorted []time.Duration, cpuUS float64) {
	if r.Seconds > 0 {
		r.RPS = float64(r.Requests) / r.Seconds
	}
	r.P50MS, r.P90MS, r.P99MS = ms(quantile(sorted, 0.50)), ms(quantile(sorted, 0.90)), ms(quantile(sorted, 0.99))
	if len(sorted) > 0 {
		r.MaxMS = ms(sorted[len(sorted)-1])
	}
	if r.Requests > 0 {
		r.CPUPerRequestUS = cpuUS / float64(r.Requests)
	}
}

// processCPU returns the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile returns the q-quantile of sorted (nearest rank), 0 when it is empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// appendRequest appends a POST request with a JSON body to b.
func appendRequest(b []byte, host, path, key string, body []byte) []byte {
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	if key != "" {
		b = append(b, "\r\nAuthorization: Bearer "...)
		b = append(b, key...)
	}
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// ioTimeout bounds every read and write of the load generator.
const ioTimeout = 10 * time.Second

// conn is one keep-alive HTTP/1.1 connection, dialled on first use.
type conn struct {
	addr string
	c    net.Conn
	io   *rawIO // c's reads and writes
	r    *bufio.Reader
	body []byte
	// deadline is when the connection's deadline was last set: it is moved once a second,
	// not before every request (a poller timer change each time).
	deadline time.Time
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

var cachedTrue = []byte(`"cached":true`)

// roundTrip writes req and reads the answer: its status and whether its body says
// "cached":true.
func (c *conn) roundTrip(req []byte) (int, bool, error) {
	if c.c == nil {
		nc, err := net.DialTimeout("tcp", c.addr, ioTimeout)
		if err != nil {
			return 0, false, err
		}
		rio, err := newRawIO(nc)
		if err != nil {
			nc.Close()
			return 0, false, err
		}
		c.c, c.io, c.deadline = nc, rio, time.Time{}
		if c.r == nil {
			c.r = bufio.NewReaderSize(rio, 32<<10)
		} else {
			c.r.Reset(rio)
		}
	}
	if now := time.Now(); now.Sub(c.deadline) >= time.Second {
		_ = c.c.SetDeadline(now.Add(ioTimeout))
		c.deadline = now
	}
	if _, err := c.io.Write(req); err != nil {
		return 0, false, err
	}
	status, keep, err := c.readResponse()
	if err != nil {
		return 0, false, err
	}
	if !keep {
		c.close()
	}
	return status, bytes.Contains(c.body, cachedTrue), nil
}

// readResponse reads one response into c.body: status line, headers, then a body of
// Content-Length bytes or in chunks.
func (c *conn) readResponse() (status int, keepAlive bool, err error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, keepAlive := -1, false, true
	for {
		line, err = c.r.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keepAlive = !bytes.EqualFold(value, []byte("close"))
		}
	}
	c.body = c.body[:0]
	switch {
	case chunked:
		for {
			line, err = c.r.ReadSlice('\n')
			if err != nil {
				return 0, false, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 32)
			if err != nil {
				return 0, false, fmt.Errorf("bad chunk size %q", line)
			}
			if size == 0 {
				_, err = c.r.ReadSlice('\n') // the final CRLF (no trailers expected)
				return status, keepAlive, err
			}
			if err := c.readBody(int(size)); err != nil {
				return 0, false, err
			}
			if _, err := c.r.Discard(2); err != nil {
				return 0, false, err
			}
		}
	case length >= 0:
		return status, keepAlive, c.readBody(length)
	default:
		return 0, false, errors.New("answer without Content-Length")
	}
}

func (c *conn) readBody(n int) error {
	off := len(c.body)
	c.body = slices.Grow(c.body, n)[:off+n]
	_, err := io.ReadFull(c.r, c.body[off:])
	return err
}

// bodySource makes request bodies: the same body every time (cache hits), or a distinct
// one each time (cache misses). A distinct body is sonar row i mod 208 whose first feature
// is moved by (1 + i/208)·1e-9, i counting up from Start: every body of a run (and of runs
// given Start values far apart) is distinct, and all stay within the features' rules.
type bodySource struct {
	same  []byte // non-nil: always this body
	oip   bool   // Open Inference Protocol bodies (rows of shape [N, 60]) rather than /api/v1's
	batch int    // > 0: this many distinct rows per body (/api/v1/predict/batch samples, or N of an OIP body)

	rows  [][]float64 // the sonar rows
	tails [][]byte    // each row's features 2..60 as JSON, with the leading comma
	start int64
	n     atomic.Int64
}

// newSameBody returns a source that always sends the first sonar row.
func newSameBody(rows [][]float64) *bodySource {
	return &bodySource{same: predictBody(nil, rows[0])}
}

// newDistinctBodies returns a source of distinct bodies, numbered from start.
func newDistinctBodies(rows [][]float64, start int64) *bodySource {
	s := &bodySource{rows: rows, start: start}
	for _, r := range rows {
		var t []byte
		for _, x := range r[1:] {
			t = append(t, ',')
			t = strconv.AppendFloat(t, x, 'g', -1, 64)
		}
		s.tails = append(s.tails, t)
	}
	return s
}

// next returns the next body; it is safe for concurrent use. The returned slice is owned by
// the caller.
func (s *bodySource) next() []byte {
	if s.same != nil {
		return s.same
	}
	if s.batch > 0 && s.oip {
		// One tensor [N, 60], its data flat.
		first := s.start + (s.n.Add(1)-1)*int64(s.batch)
		b := append(make([]byte, 0, s.batch*700), `{"inputs":[{"name":"features","datatype":"FP64","shape":[`...)
		b = strconv.AppendInt(b, int64(s.batch), 10)
		b = append(b, `,60],"data":[`...)
		for j := range int64(s.batch) {
			i := first + j
			row := int(i % int64(len(s.rows)))
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, s.rows[row][0]+float64(1+i/int64(len(s.rows)))*1e-9, 'g', -1, 64)
			b = append(b, s.tails[row]...)
		}
		return append(b, "]}]}"...)
	}
	if s.batch > 0 {
		first := s.start + (s.n.Add(1)-1)*int64(s.batch)
		b := append(make([]byte, 0, s.batch*700), `{"samples":[`...)
		for j := range int64(s.batch) {
			if j > 0 {
				b = append(b, ',')
			}
			b = s.appendRow(b, first+j)
		}
		return append(b, "]}"...)
	}
	return s.appendRow(nil, s.start+s.n.Add(1)-1)
}

// appendRow appends the predict body of distinct row i.
func (s *bodySource) appendRow(b []byte, i int64) []byte {
	row := int(i % int64(len(s.rows)))
	x0 := s.rows[row][0] + float64(1+i/int64(len(s.rows)))*1e-9
	if s.oip {
		if b == nil {
			b = make([]byte, 0, 96+24+len(s.tails[row])+2)
		}
		b = append(b, `{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[`...)
	} else {
		if b == nil {
			b = make([]byte, 0, 16+24+len(s.tails[row])+2)
		}
		b = append(b, `{"features":[`...)
	}
	b = strconv.AppendFloat(b, x0, 'g', -1, 64)
	b = append(b, s.tails[row]...)
	if s.oip {
		return append(b, "]}]}"...)
	}
	return append(b, "]}"...)
}

// predictBody is the JSON body of a predict of features.
func predictBody(b []byte, features []float64) []byte {
	b = append(b, `{"features":[`...)
	for i, x := range features {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, x, 'g', -1, 64)
	}
	return append(b, "]}"...)
}

// loadCommand is `bench load`: one measurement point, its loadResult printed as JSON.
func loadCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server host:port (loopback only)")
	path := fs.String("path", "/api/v1/predict", "request path")
	key := fs.String("key", "", "API key")
	conns := fs.Int("conns", 16, "connections")
	duration := fs.Duration("duration", 10*time.Second, "how long requests are started")
	maxReq := fs.Int64("max", 5_000_000, "most requests in all")
	mode := fs.String("bodies", "distinct", "distinct (a new input per request), distinct-oip (the same as Open Inference Protocol requests), same (one input repeated), distinct-batch or distinct-oip-batch (-batch new inputs per request: /api/v1/predict/batch samples, or one OIP tensor [N, 60])")
	batch := fs.Int("batch", 1, "rows per request with -bodies distinct-batch or distinct-oip-batch")
	start := fs.Int64("start", 0, "number of the first distinct body")
	data := fs.String("data", "data/sonar.csv", "sonar CSV file")
	latencies := fs.Bool("latencies", false, "print every latency too (latencies_us), to merge rounds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, err := readSonar(*data)
	if err != nil {
		return err
	}
	var bodies *bodySource
	switch *mode {
	case "distinct":
		bodies = newDistinctBodies(rows, *start)
	case "distinct-oip":
		bodies = newDistinctBodies(rows, *start)
		bodies.oip = true
	case "same":
		bodies = newSameBody(rows)
	case "distinct-batch", "distinct-oip-batch":
		if *batch < 1 {
			return fmt.Errorf("load: -batch must be positive, got %d", *batch)
		}
		bodies = newDistinctBodies(rows, *start)
		bodies.batch, bodies.oip = *batch, *mode == "distinct-oip-batch"
	default:
		return fmt.Errorf("load: -bodies must be distinct, distinct-oip, same, distinct-batch or distinct-oip-batch, got %q", *mode)
	}
	r, err := runLoad(loadConfig{Addr: *addr, Path: *path, Key: *key, Conns: *conns, Duration: *duration, Max: *maxReq, Bodies: bodies, Latencies: *latencies})
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(r)
}
