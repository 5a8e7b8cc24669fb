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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/predq/predq/internal/oip/inferencepb"
)

// The gRPC load generator: closed loop like the HTTP one, -conns workers each with a gRPC
// connection of its own (as each HTTP worker has its TCP connection), each sending
// ModelInfer with -rows distinct rows (numbered as the HTTP distinct bodies are), in
// fp64_contents or, with -raw, raw_input_contents. It uses grpc-go's client, which costs
// more CPU per call than the HTTP generator's raw system calls: the load it measures shares
// the machine with it (its CPU per call is reported).

// grpcLoadConfig is one gRPC measurement point.
type grpcLoadConfig struct {
	Addr     string
	Key      string
	Conns    int
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
	in := &pb.ModelInferRequest_InferInputTensor{Name: "features", Datatype: "FP64",
		Shape: []int64{int64(cfg.Rows), int64(len(cfg.Sonar[0]))}}
	req := &pb.ModelInferRequest{ModelName: "sonar", Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}
	if cfg.Raw {
		b := make([]byte, 0, 8*cfg.Rows*len(cfg.Sonar[0]))
		for j := range int64(cfg.Rows) {
			for _, x := range distinctRow(cfg.Sonar, first+j) {
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
			}
		}
		req.RawInputContents = [][]byte{b}
		return req
	}
	flat := make([]float64, 0, cfg.Rows*len(cfg.Sonar[0]))
	for j := range int64(cfg.Rows) {
		flat = append(flat, distinctRow(cfg.Sonar, first+j)...)
	}
	in.Contents = &pb.InferTensorContents{Fp64Contents: flat}
	return req
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
	clients := make([]pb.GRPCInferenceServiceClient, cfg.Conns)
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
			defer func() { lat[w] = samples }()
			for time.Now().Before(end) {
				first := cfg.Start + (next.Add(1)-1)*int64(cfg.Rows)
				req := inferRequest(cfg, first)
				t0 := time.Now()
				resp, err := clients[w].ModelInfer(ctx, req)
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
	conns := fs.Int("conns", 16, "connections, one worker each")
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
	r, err := runGRPCLoad(ctx, grpcLoadConfig{Addr: *addr, Key: *key, Conns: *conns, Duration: *duration,
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
	res := &grpcResult{BatchRows: grpcBatchRows, BatchConns: grpcBatchConns, RESTPath: "/v2/models/sonar/infer"}
	grpcPoint := func(conns, rows int, raw bool, dur time.Duration) (loadResult, error) {
		args := []string{"grpc-load", "-addr", b.grpcAddr, "-key", b.key, "-conns", strconv.Itoa(conns),
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
		name string
		out  *loadResult
		run  func(time.Duration) (loadResult, error)
	}{
		{"unary rest", &res.UnaryREST, func(t time.Duration) (loadResult, error) {
			return restPoint(conns, "/v2/models/sonar/infer", "distinct-oip", 1, t)
		}},
		{"unary grpc", &res.UnaryGRPC, func(t time.Duration) (loadResult, error) { return grpcPoint(conns, 1, false, t) }},
		{"batch rest", &res.BatchREST, func(t time.Duration) (loadResult, error) {
			return restPoint(grpcBatchConns, "/v2/models/sonar/infer", "distinct-oip-batch", grpcBatchRows, t)
		}},
		{"batch grpc", &res.BatchGRPC, func(t time.Duration) (loadResult, error) {
			return grpcPoint(grpcBatchConns, grpcBatchRows, true, t)
		}},
	}
	for _, s := range steps {
		b.log("grpc %s: %s after a %s warm-up", s.name, d, warmup)
		if _, err = s.run(warmup); err != nil {
			return nil, err
		}
		var r loadResult
		r, err = s.run(d)
		if err := check(s.name, r, err); err != nil {
			return nil, err
		}
		*s.out = r
		b.log("grpc %s: %.0f calls/s, p50 %.2f ms, p99 %.2f ms, load generator %.0f µs/call", s.name, r.RPS, r.P50MS, r.P99MS, r.CPUPerRequestUS)
	}
	return res, nil
}
