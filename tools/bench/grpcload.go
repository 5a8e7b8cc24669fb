package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/predq/predq/internal/oip/inferencepb"
)

// The gRPC load generator: closed loop like the HTTP one, -conns workers sharing -channels
// gRPC client connections round-robin (0: one each, as each HTTP worker has its TCP
// connection), each sending
// ModelInfer with -rows distinct rows (numbered as the HTTP distinct bodies are), in
// fp64_contents or, with -raw, raw_input_contents. It uses grpc-go's client, which costs
// more CPU per call than the HTTP generator's raw system calls: the load it measures shares
// the machine with it (its CPU per call is reported).

// grpcLoadConfig is one gRPC measurement point.
type grpcLoadConfig struct {
	Addr  string
	Key   string
	Conns int
	// Channels is how many client connections (grpc.ClientConn) the Conns workers share,
	// round-robin; 0 or Conns: one each.
	Channels int
	Duration time.Duration
	Rows     int   // rows per call
	Raw      bool  // raw_input_contents instead of fp64_contents
	Start    int64 // number of the first distinct row
	Sonar    [][]float64
}

// distinctRow is sonar row i mod 208 with its first feature moved by (1 + i/208)·1e-9, as
// bodySource's distinct bodies are.
func distinctRow(rows [][]float64, i int64) []float64 {
	r := slices.Clone(rows[int(i%int64(len(rows)))])
	r[0] += float64(1+i/int64(len(rows))) * 1e-9
	return r
}

// inferRequest builds a call of n distinct rows numbered from first.
func inferRequest(cfg grpcLoadConfig, first int64) *pb.ModelInferRequest {
	c := newCallBuilder(cfg)
	return c.next(first)
}

// callBuilder makes a worker's calls in one request message whose elements are rewritten for
// each call (a call's message is not read once ModelInfer returns): the generator allocates
// no tensor per call, so that its CPU per call is grpc-go's, not the bench's.
type callBuilder struct {
	cfg  grpcLoadConfig
	req  *pb.ModelInferRequest
	flat []float64 // fp64_contents
	raw  []byte    // raw_input_contents[0]
}

func newCallBuilder(cfg grpcLoadConfig) *callBuilder {
	n := cfg.Rows * len(cfg.Sonar[0])
	in := &pb.ModelInferRequest_InferInputTensor{Name: "features", Datatype: "FP64",
		Shape: []int64{int64(cfg.Rows), int64(len(cfg.Sonar[0]))}}
	c := &callBuilder{cfg: cfg, req: &pb.ModelInferRequest{ModelName: "sonar", Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}}
	if cfg.Raw {
		c.raw = make([]byte, 8*n)
		c.req.RawInputContents = [][]byte{c.raw}
	} else {
		c.flat = make([]float64, n)
		in.Contents = &pb.InferTensorContents{Fp64Contents: c.flat}
	}
	return c
}

// next sets the message's rows to the distinct rows numbered from first (distinctRow's) and
// returns it.
func (c *callBuilder) next(first int64) *pb.ModelInferRequest {
	rows := c.cfg.Sonar
	width := len(rows[0])
	for j := range c.cfg.Rows {
		i := first + int64(j)
		src := rows[int(i%int64(len(rows)))]
		for k, x := range src {
			if k == 0 {
				x += float64(1+i/int64(len(rows))) * 1e-9
			}
			if c.raw != nil {
				binary.LittleEndian.PutUint64(c.raw[8*(j*width+k):], math.Float64bits(x))
			} else {
				c.flat[j*width+k] = x
			}
		}
	}
	return c.req
}

// runGRPCLoad measures one point. Requests counts answered calls (each of cfg.Rows rows).
func runGRPCLoad(ctx context.Context, cfg grpcLoadConfig) (loadResult, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return loadResult{}, fmt.Errorf("grpc-load: address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return loadResult{}, fmt.Errorf("grpc-load: %q is not a loopback address", cfg.Addr)
	}
	if cfg.Conns < 1 || cfg.Duration <= 0 || cfg.Rows < 1 {
		return loadResult{}, errors.New("grpc-load: conns, duration and rows must be positive")
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.Key)
	var (
		next              atomic.Int64
		okCount, errCount atomic.Int64
		firstErr          atomic.Value
		wg                sync.WaitGroup
	)
	channels := cfg.Channels
	if channels <= 0 || channels > cfg.Conns {
		channels = cfg.Conns
	}
	clients := make([]pb.GRPCInferenceServiceClient, channels)
	for w := range clients {
		conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return loadResult{}, err
		}
		defer conn.Close()
		conn.Connect()
		clients[w] = pb.NewGRPCInferenceServiceClient(conn)
	}
	lat := make([][]time.Duration, cfg.Conns)
	cpu0 := processCPU()
	start := time.Now()
	end := start.Add(cfg.Duration)
	for w := range cfg.Conns {
		wg.Go(func() {
			samples := make([]time.Duration, 0, 4096)
			calls := newCallBuilder(cfg)
			defer func() { lat[w] = samples }()
			for time.Now().Before(end) {
				first := cfg.Start + (next.Add(1)-1)*int64(cfg.Rows)
				req := calls.next(first)
				t0 := time.Now()
				resp, err := clients[w%channels].ModelInfer(ctx, req)
				d := time.Since(t0)
				if err == nil && len(resp.GetOutputs()) != 3 {
					err = fmt.Errorf("%d outputs", len(resp.GetOutputs()))
				}
				if err != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				okCount.Add(1)
				samples = append(samples, d)
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := loadResult{Conns: cfg.Conns, Requests: okCount.Load(), Errors: errCount.Load(), Seconds: elapsed.Seconds()}
	r.summarize(all, float64(cpu.Nanoseconds())/1000)
	if e, ok := firstErr.Load().(string); ok {
		r.FirstError = e
	}
	return r, nil
}

// grpcLoadCommand is `bench grpc-load`: one gRPC point, its loadResult printed as JSON.
func grpcLoadCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("grpc-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "gRPC server host:port (loopback only)")
	key := fs.String("key", "", "API key")
	conns := fs.Int("conns", 16, "workers, each with one call in flight")
	channels := fs.Int("channels", 0, "client connections the workers share round-robin (0: one per worker)")
	duration := fs.Duration("duration", 10*time.Second, "how long calls are started")
	rows := fs.Int("rows", 1, "rows per ModelInfer call")
	raw := fs.Bool("raw", false, "send the rows in raw_input_contents (little-endian) instead of fp64_contents")
	start := fs.Int64("start", 0, "number of the first distinct row")
	data := fs.String("data", "data/sonar.csv", "sonar CSV file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sonar, err := readSonar(*data)
	if err != nil {
		return err
	}
	r, err := runGRPCLoad(ctx, grpcLoadConfig{Addr: *addr, Key: *key, Conns: *conns, Channels: *channels, Duration: *duration,
		Rows: *rows, Raw: *raw, Start: *start, Sonar: sonar})
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(r)
}

// grpcResult is the gRPC phase: each gRPC point with the REST point of the same load.
type grpcResult struct {
	// Unary: one row per call, cache misses, gRPC ModelInfer (fp64_contents) and the REST
	// binding's POST /v2/models/sonar/infer, at the same connection count.
	UnaryGRPC loadResult `json:"unary_grpc"`
	UnaryREST loadResult `json:"unary_rest"`
	// Batch: BatchRows distinct rows per call, gRPC ModelInfer with raw_input_contents and
	// the REST binding's infer with the same rows as JSON (one FP64 tensor [N, 60], data
	// flat), at BatchConns connections.
	BatchRows  int        `json:"batch_rows"`
	BatchConns int        `json:"batch_conns"`
	BatchGRPC  loadResult `json:"batch_grpc"`
	BatchREST  loadResult `json:"batch_rest"`
	// RESTPath names what the REST side called.
	RESTPath string `json:"rest_path"`
	// Channels is how many gRPC client connections the unary point's workers share (each
	// batch worker has its own).
	Channels int `json:"grpc_channels"`
	// CPUPerCallUS is, for each point (unary_grpc, unary_rest, batch_grpc, batch_rest), the
	// CPU time each process spent per answered call, from the start of the point until the
	// persist queue was drained: api, worker, redis, postgres, and load (the generator's
	// own). The api's is the server-side cost of each door, which the throughput ratio on a
	// machine the generator shares does not isolate.
	CPUPerCallUS map[string]map[string]float64 `json:"cpu_us_per_call"`
}

// grpcBatchRows and grpcBatchConns set the batch points.
const (
	grpcBatchRows  = 1000
	grpcBatchConns = 4
)

// grpcPhase measures gRPC against the protocol's REST binding (/v2) on the same load: one row per call at targetConns
// connections (the smoke run's first connection count), then 1,000 rows per call. Each
// point runs after a warm-up of its own; all inputs are distinct (cache misses).
func (b *bench) grpcPhase(ctx context.Context) (*grpcResult, error) {
	conns := targetConns
	if b.opts.Smoke {
		conns = b.opts.Conns[0]
	}
	d, warmup := b.opts.Duration, b.opts.Warmup
	res := &grpcResult{BatchRows: grpcBatchRows, BatchConns: grpcBatchConns, RESTPath: "/v2/models/sonar/infer",
		Channels: b.opts.GRPCChannels, CPUPerCallUS: map[string]map[string]float64{}}
	if res.Channels <= 0 || res.Channels > conns {
		res.Channels = conns
	}
	insp := asynq.NewInspector(b.asynqOpt(0))
	defer insp.Close()
	meter := b.meter()
	grpcPoint := func(conns, rows int, raw bool, dur time.Duration) (loadResult, error) {
		channels := conns // the batch point: one connection per worker
		if rows == 1 {
			channels = res.Channels
		}
		args := []string{"grpc-load", "-addr", b.grpcAddr, "-key", b.key, "-conns", strconv.Itoa(conns), "-channels", strconv.Itoa(channels),
			"-duration", dur.String(), "-rows", strconv.Itoa(rows), "-data", b.sonar,
			"-start", strconv.FormatInt(b.nextStart(), 10)}
		if raw {
			args = append(args, "-raw")
		}
		var r loadResult
		err := b.runJSON(ctx, b.pin.Load, &r, args...)
		return r, err
	}
	restPoint := func(conns int, path, bodies string, rows int, dur time.Duration) (loadResult, error) {
		args := []string{"load", "-addr", b.apiURL[len("http://"):], "-key", b.key, "-conns", strconv.Itoa(conns),
			"-duration", dur.String(), "-data", b.sonar, "-path", path, "-bodies", bodies, "-batch", strconv.Itoa(rows),
			"-start", strconv.FormatInt(b.nextStart(), 10)}
		var r loadResult
		err := b.runJSON(ctx, b.pin.Load, &r, args...)
		return r, err
	}
	check := func(name string, r loadResult, err error) error {
		if err != nil {
			return err
		}
		if r.Errors > 0 || r.Requests == 0 {
			return fmt.Errorf("grpc phase %s: %d answered, %d errors, the first: %s", name, r.Requests, r.Errors, r.FirstError)
		}
		if r.Cached > 0 {
			return fmt.Errorf("grpc phase %s: %d answers were cache hits", name, r.Cached)
		}
		return nil
	}
	var err error
	steps := []struct {
		name, key string
		out       *loadResult
		run       func(time.Duration) (loadResult, error)
	}{
		{"unary rest", "unary_rest", &res.UnaryREST, func(t time.Duration) (loadResult, error) {
			return restPoint(conns, "/v2/models/sonar/infer", "distinct-oip", 1, t)
		}},
		{"unary grpc", "unary_grpc", &res.UnaryGRPC, func(t time.Duration) (loadResult, error) { return grpcPoint(conns, 1, false, t) }},
		{"batch rest", "batch_rest", &res.BatchREST, func(t time.Duration) (loadResult, error) {
			return restPoint(grpcBatchConns, "/v2/models/sonar/infer", "distinct-oip-batch", grpcBatchRows, t)
		}},
		{"batch grpc", "batch_grpc", &res.BatchGRPC, func(t time.Duration) (loadResult, error) {
			return grpcPoint(grpcBatchConns, grpcBatchRows, true, t)
		}},
	}
	for _, s := range steps {
		b.log("grpc %s: %s after a %s warm-up", s.name, d, warmup)
		if _, err = s.run(warmup); err != nil {
			return nil, err
		}
		// The warm-up's records are stored before the point starts, and the point's before
		// the next one: no point pays for the persistence of another.
		if _, err := waitDrained(ctx, insp, persistQueue, 5*time.Minute); err != nil {
			return nil, err
		}
		cpu0 := meter.sample()
		var r loadResult
		r, err = s.run(d)
		if err := check(s.name, r, err); err != nil {
			return nil, err
		}
		if _, err := waitDrained(ctx, insp, persistQueue, 5*time.Minute); err != nil {
			return nil, err
		}
		cpu := perRequestUS(cpu0, meter.sample(), r.Requests)
		for _, other := range []string{"api-all-hits", "api-queue", "ceiling"} {
			delete(cpu, other)
		}
		cpu["load"] = r.CPUPerRequestUS
		*s.out, res.CPUPerCallUS[s.key] = r, cpu
		b.log("grpc %s: %.0f calls/s, p50 %.2f ms, p99 %.2f ms; CPU µs/call: api %.0f, load %.0f, worker %.0f, redis %.0f, postgres %.0f",
			s.name, r.RPS, r.P50MS, r.P99MS, cpu["api"], cpu["load"], cpu["worker"], cpu["redis"], cpu["postgres"])
	}
	return res, nil
}

// defaultGRPCChannels is how many client connections the unary gRPC point's workers share:
// a gRPC client multiplexes its calls on few connections, and one connection per call in
// flight makes grpc-go's client, on the machine the api shares, the costlier side.
const defaultGRPCChannels = 4
