package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests cover the pieces of the bench that can go wrong silently (a load generator
// that miscounts, inputs that repeat, a wrong target verdict); `make bench-smoke` runs the
// whole tool against real services.

func sonarRows(t *testing.T) [][]float64 {
	t.Helper()
	rows, err := readSonar("../../data/sonar.csv")
	require.NoError(t, err)
	require.Len(t, rows, 208)
	require.Len(t, rows[0], 60)
	return rows
}

func TestDistinctBodiesNeverRepeatAndKeepTheRules(t *testing.T) {
	t.Parallel()
	rows := sonarRows(t)
	seen := map[string]bool{}
	for _, start := range []int64{0, 100_000_000} {
		src := newDistinctBodies(rows, start)
		for range 5000 {
			b := src.next()
			require.False(t, seen[string(b)], "repeated body %s", b)
			seen[string(b)] = true
			var req ceilingRequest
			require.NoError(t, json.Unmarshal(b, &req))
			require.Len(t, req.Features, 60)
			for _, x := range req.Features {
				require.LessOrEqual(t, x, 1000.0)
				require.GreaterOrEqual(t, x, -1000.0)
			}
		}
	}
	same := newSameBody(rows)
	require.Equal(t, same.next(), same.next())
}

// The OIP bodies carry the same features as the /api/v1 bodies of the same numbers.
func TestDistinctOIPBodiesCarryTheSameRows(t *testing.T) {
	t.Parallel()
	rows := sonarRows(t)
	plain, oip := newDistinctBodies(rows, 7), newDistinctBodies(rows, 7)
	oip.oip = true
	for range 500 {
		var want ceilingRequest
		require.NoError(t, json.Unmarshal(plain.next(), &want))
		var got struct {
			Inputs []struct {
				Name, Datatype string
				Shape          []int
				Data           []float64
			}
		}
		b := oip.next()
		require.NoError(t, json.Unmarshal(b, &got), string(b))
		require.Len(t, got.Inputs, 1)
		require.Equal(t, "features", got.Inputs[0].Name)
		require.Equal(t, "FP64", got.Inputs[0].Datatype)
		require.Equal(t, []int{1, 60}, got.Inputs[0].Shape)
		require.Equal(t, want.Features, got.Inputs[0].Data)
	}
}

func TestLoadCountsAnswersOfTheCeiling(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newCeilingHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	r, err := runLoad(loadConfig{Addr: addr, Path: "/api/v1/predict", Conns: 4, Duration: 200 * time.Millisecond,
		Max: 1000, Bodies: newDistinctBodies(sonarRows(t), 0)})
	require.NoError(t, err)
	require.Zero(t, r.Errors, r.FirstError)
	require.Positive(t, r.Requests)
	require.LessOrEqual(t, r.Requests, int64(1000))
	require.LessOrEqual(t, r.P50MS, r.P99MS)
	require.LessOrEqual(t, r.P99MS, r.MaxMS)
	require.Positive(t, r.CPUPerRequestUS)
	require.Empty(t, r.LatenciesUS, "only when asked")

	// Asked for, every answered request's latency comes along, sorted, within the extremes.
	r, err = runLoad(loadConfig{Addr: addr, Path: "/api/v1/predict", Conns: 2, Duration: 100 * time.Millisecond,
		Max: 300, Bodies: newDistinctBodies(sonarRows(t), 0), Latencies: true})
	require.NoError(t, err)
	require.Len(t, r.LatenciesUS, int(r.Requests))
	require.True(t, slices.IsSorted(r.LatenciesUS))
	require.LessOrEqual(t, float64(r.LatenciesUS[len(r.LatenciesUS)-1])/1000, r.MaxMS)

	// A wrong path is counted as errors, not as answers.
	r, err = runLoad(loadConfig{Addr: addr, Path: "/nowhere", Conns: 1, Duration: 50 * time.Millisecond,
		Max: 10, Bodies: newSameBody(sonarRows(t))})
	require.NoError(t, err)
	require.Zero(t, r.Requests)
	require.Positive(t, r.Errors)
	require.Contains(t, r.FirstError, "404")
}

func TestLoadRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	_, err := runLoad(loadConfig{Addr: "192.0.2.1:80", Path: "/", Conns: 1, Duration: time.Millisecond, Max: 1})
	require.ErrorContains(t, err, "loopback")
}

func TestChunkedAnswersAreRead(t *testing.T) {
	t.Parallel()
	in := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"cac\r\n9\r\nhed\":true\r\n1\r\n}\r\n0\r\n\r\n"
	c := &conn{r: bufio.NewReader(strings.NewReader(in))}
	status, keep, err := c.readResponse()
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.True(t, keep)
	require.Equal(t, `{"cached":true}`, string(c.body))
}

func TestNDJSONStreamMatchesItsSize(t *testing.T) {
	t.Parallel()
	lines, err := readSonarNDJSON("../../data/sonar.csv")
	require.NoError(t, err)
	for _, n := range []int{1, 208, 1000} {
		b, err := io.ReadAll(newNDJSONReader(lines, n))
		require.NoError(t, err)
		require.Equal(t, ndjsonSize(lines, n), int64(len(b)))
		got := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
		require.Len(t, got, n)
		var row []float64
		require.NoError(t, json.Unmarshal(got[n-1], &row))
		require.Len(t, row, 60)
	}
}

// The rounds of a point merge into their requests over their time, and quantiles of all their
// latencies rather than an average of each round's.
func TestMergeRoundsPoolsRequestsAndLatencies(t *testing.T) {
	t.Parallel()
	lat := func(from, to int64) []int64 {
		var s []int64
		for us := from; us <= to; us++ {
			s = append(s, us)
		}
		return s
	}
	a := loadResult{Conns: 64, Requests: 100, Seconds: 1, RPS: 100, CPUPerRequestUS: 10, LatenciesUS: lat(1001, 1100)}
	b := loadResult{Conns: 64, Requests: 300, Seconds: 2, RPS: 150, CPUPerRequestUS: 20, Cached: 2, LatenciesUS: lat(2001, 2300)}
	m := mergeRounds([]loadResult{a, b})
	require.Equal(t, int64(400), m.Requests)
	require.Equal(t, int64(2), m.Cached)
	require.Equal(t, 64, m.Conns)
	require.InDelta(t, 3.0, m.Seconds, 1e-9)
	require.InDelta(t, 400.0/3, m.RPS, 1e-9)
	require.InDelta(t, 17.5, m.CPUPerRequestUS, 1e-9, "weighted by requests")
	require.InDelta(t, 2.1, m.P50MS, 1e-9, "the 200th of 400 latencies: the 100th of the second round")
	require.InDelta(t, 2.296, m.P99MS, 1e-9)
	require.InDelta(t, 2.3, m.MaxMS, 1e-9)
	require.Nil(t, m.LatenciesUS)
}

func TestRoundRatiosTakeEachRoundAgainstItsCeiling(t *testing.T) {
	t.Parallel()
	ceiling := httpPoint{Target: "ceiling", RoundRPS: []float64{30000, 20000, 25000}}
	miss := httpPoint{Target: "predict-miss", RoundRPS: []float64{9000, 8000, 10000}}
	require.Equal(t, "ratio within each of the 3 rounds 0.30–0.40×", roundRatios(miss, ceiling))
	require.Empty(t, roundRatios(httpPoint{RoundRPS: []float64{9000}}, httpPoint{RoundRPS: []float64{30000}}), "one round: nothing to add")
	require.Empty(t, roundRatios(miss, httpPoint{}), "a report from before the rounds")
}

func TestQuantileIsNearestRank(t *testing.T) {
	t.Parallel()
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	require.Equal(t, time.Duration(50), quantile(s, 0.5))
	require.Equal(t, time.Duration(99), quantile(s, 0.99))
	require.Equal(t, time.Duration(100), quantile(s, 1))
	require.Zero(t, quantile(nil, 0.5))
}

func TestTargetsAreJudgedOnRatios(t *testing.T) {
	t.Parallel()
	rep := report{
		HTTP: []httpPoint{
			{Target: "ceiling", Result: loadResult{Conns: 64, RPS: 30000}},
			{Target: "predict-miss", Result: loadResult{Conns: 64, RPS: 16000, P99MS: 6}},
			{Target: "predict-hit", Result: loadResult{Conns: 64, RPS: 18000}},
		},
		Job:    &jobResult{Rows: 1000, RowsPS: 50, CopyRowsPS: 100},
		Memory: &memResult{AfterHTTP: 100e6, AfterUpload: 151e6},
	}
	met := map[string]bool{}
	for _, r := range buildRows(rep, options{}) {
		if r.Met != nil {
			met[r.Measure] = *r.Met
		}
	}
	require.False(t, met["HTTP 64 conns: predict, cache misses"], "0.53× but p99 6 ms > 5 ms")
	require.True(t, met["HTTP 64 conns: predict, cache hits"], "0.6×")
	require.True(t, met["job: 1,000-row NDJSON, submit → succeeded"], "0.5×")
	require.True(t, met["api peak RSS (VmHWM) after the HTTP load"])
	require.False(t, met["api peak RSS (VmHWM) after the 1,000-row upload and job"])

	var out bytes.Buffer
	writeMarkdown(&out, report{Rows: buildRows(rep, options{})})
	require.Contains(t, out.String(), "| HTTP 64 conns: predict, cache misses | 16,000 req/s, p50 0.00 ms, p99 6.00 ms | 30,000 req/s (bare Echo) | 0.53× | ≥ 0.5×, p99 ≤ 5 ms | no |")
	// The in-process measurements are lines naming the go test -bench that gives them.
	require.Contains(t, out.String(), "PredictBatch (target: PredictBatch ≤ 1.5× the raw kernel) against the raw gonum kernel and a plain Go loop | `go test -run '^$' -bench 'RawKernel|PredictOne|PredictBatch1000' ./internal/inference/` (printed after this table by `make bench`) | | | | |")
}

func TestItoaGroupsThousands(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1000: "-1,000"} {
		require.Equal(t, want, itoa(in))
	}
}

func TestTargetsFlagKeepsTheCeilingFirst(t *testing.T) {
	t.Parallel()
	o, err := parseOptions([]string{"bench", "-root", "../..", "-targets", "predict-hit, predict-miss,predict-hit"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"ceiling", "predict-hit", "predict-miss"}, o.Targets)

	o, err = parseOptions([]string{"bench", "-root", "../.."}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, httpTargets, o.Targets)

	_, err = parseOptions([]string{"bench", "-root", "../..", "-targets", "predict-mis"}, io.Discard)
	require.ErrorContains(t, err, `unknown target "predict-mis"`)
}

func TestRoundsFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 5}, {[]string{"-smoke"}, 2}, {[]string{"-rounds", "1"}, 1}, {[]string{"-smoke", "-rounds", "3"}, 3},
	} {
		o, err := parseOptions(append([]string{"bench", "-root", "../.."}, c.args...), io.Discard)
		require.NoError(t, err)
		require.Equal(t, c.want, o.Rounds, "%v", c.args)
	}
	_, err := parseOptions([]string{"bench", "-root", "../..", "-rounds", "-1"}, io.Discard)
	require.ErrorContains(t, err, "-rounds")
}

func TestCPUBoundOfTheMisses(t *testing.T) {
	t.Parallel()
	rep := report{
		Machine: machine{NProc: 2},
		HTTP: []httpPoint{
			{Target: "ceiling", Result: loadResult{Conns: 64, RPS: 30000, P99MS: 5.25}, CPUPerRequestUS: map[string]float64{"ceiling": 30, "load": 18}},
			{Target: "predict-miss", Result: loadResult{Conns: 64, RPS: 9000}, MachineCPUPerRequestUS: 180, IdleShare: 0.1,
				CPUPerRequestUS: map[string]float64{"api": 80, "worker": 1, "redis": 12, "postgres": 27, "load": 20}},
		},
	}
	var out bytes.Buffer
	writeMarkdown(&out, report{Rows: buildRows(rep, options{})})
	require.Contains(t, out.String(), "| HTTP 64 conns: predict, cache misses, CPU of every process per miss (api, worker, Redis, Postgres, load generator) | 140 µs/req (the ratio this CPU allows on 2 cores")
	require.Contains(t, out.String(), "at most 2 × 30 µs (the ceiling's CPU per request) ÷ 140 µs = 0.43×; the whole machine, kernel threads included, 180 µs per miss, idle 10% of the time")
	require.Contains(t, out.String(), "CPU 30 µs/req; load generator 18")
	require.Contains(t, out.String(), "load generator 20; the bare Echo ceiling's own p99 at 64 connections: 5.25 ms)")

	// Little's law: 64 connections at 15,000 req/s (0.5 × 30,000) wait 4.27 ms on average, so
	// a p99 of 5 ms is 1.17× the mean; a mean of 5 ms takes 12,800 req/s; an api at 80 µs a
	// miss on one core serves 12,500.
	require.Contains(t, out.String(), "| HTTP 64 conns: predict, cache misses, mean latency at 0.5× of the ceiling (Little's law) | 4.27 ms (a closed loop's mean latency is connections ÷ throughput: at 0.5×")
	require.Contains(t, out.String(), "at 0.5× of the ceiling's 30,000 req/s, 64 connections wait 4.27 ms on average, so p99 ≤ 5 ms allows a p99 of at most 1.17× the mean; a mean of 5 ms takes 12,800 req/s, 0.43× of the ceiling)")
	require.NotContains(t, out.String(), "pinned to one core", "the report says the api was not pinned")
	rep.Pinned = true
	out.Reset()
	writeMarkdown(&out, report{Rows: buildRows(rep, options{})})
	require.Contains(t, out.String(), "0.43× of the ceiling; the api, pinned to one core at 80 µs of CPU per miss, serves at most 12,500 req/s (0.42× of the ceiling), a mean of at least 5.12 ms)")

	// A ceiling of 16,000 req/s: at 8,000 req/s the mean is 8 ms, and with 99% of requests
	// at most 5 ms the slowest 1% average at least (8 − 4.95) ÷ 0.01 = 305 ms.
	rep.HTTP[0].Result.RPS = 16000
	out.Reset()
	writeMarkdown(&out, report{Rows: buildRows(rep, options{})})
	require.Contains(t, out.String(), "64 connections wait 8.00 ms on average, so p99 ≤ 5 ms would need the slowest 1% of requests to average at least 305 ms; a mean of 5 ms takes 12,800 req/s, 0.80× of the ceiling")
	rep.HTTP[0].Result.RPS = 30000

	// A report saved before the load generator's CPU was measured has no such row.
	delete(rep.HTTP[1].CPUPerRequestUS, "load")
	out.Reset()
	writeMarkdown(&out, report{Rows: buildRows(rep, options{})})
	require.NotContains(t, out.String(), "CPU of every process")
}

func TestRenderMakesTheRowsAgain(t *testing.T) {
	t.Parallel()
	rep := report{
		Machine: machine{NProc: 2}, Mode: "full", Pinned: true,
		HTTP: []httpPoint{
			{Target: "ceiling", Result: loadResult{Conns: 64, RPS: 16000}, CPUPerRequestUS: map[string]float64{"ceiling": 60, "load": 30}},
			{Target: "predict-miss", Result: loadResult{Conns: 64, RPS: 5000}, CPUPerRequestUS: map[string]float64{"api": 140, "worker": 2, "redis": 14, "postgres": 40, "load": 34}},
		},
		// Rows saved by an older version, without the latency row.
		Rows: []row{{Group: "http", Measure: "HTTP 64 conns: predict, cache misses", Value: 5000, Unit: "req/s"}},
	}
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "bench.json")
	require.NoError(t, os.WriteFile(path, b, 0o600))

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"bench", "-root", "../..", "-render", path}, func(string) string { return "" }, &out, io.Discard))
	require.Contains(t, out.String(), "| HTTP 64 conns: predict, cache misses | 5,000 req/s")
	require.Contains(t, out.String(), "| 0.31× | ≥ 0.5×, p99 ≤ 5 ms | no |", "judged again: 5,000 of 16,000")
	require.Contains(t, out.String(), "mean latency at 0.5× of the ceiling (Little's law) | 8.00 ms")
	require.Contains(t, out.String(), "serves at most 7,143 req/s (0.45× of the ceiling)")
}

func TestDistinctBatchBodiesHoldDistinctRows(t *testing.T) {
	t.Parallel()
	rows := sonarRows(t)
	src := newDistinctBodies(rows, 0)
	src.batch = 300
	seen := map[float64]bool{}
	for range 4 {
		var req struct {
			Samples []ceilingRequest `json:"samples"`
		}
		require.NoError(t, json.Unmarshal(src.next(), &req))
		require.Len(t, req.Samples, 300)
		for _, s := range req.Samples {
			require.Len(t, s.Features, 60)
			key := s.Features[0]*1e6 + s.Features[1] // the first feature is what moves
			require.False(t, seen[key], "a row repeats")
			seen[key] = true
		}
	}
	// The OIP form: one tensor [N, 60] with the rows flat, numbered the same way.
	oipSrc := newDistinctBodies(rows, 0)
	oipSrc.batch, oipSrc.oip = 3, true
	var inf struct {
		Inputs []struct {
			Name     string    `json:"name"`
			Datatype string    `json:"datatype"`
			Shape    []int64   `json:"shape"`
			Data     []float64 `json:"data"`
		} `json:"inputs"`
	}
	require.NoError(t, json.Unmarshal(oipSrc.next(), &inf))
	require.Len(t, inf.Inputs, 1)
	require.Equal(t, []int64{3, 60}, inf.Inputs[0].Shape)
	require.Len(t, inf.Inputs[0].Data, 180)
	require.Equal(t, distinctRow(rows, 2), inf.Inputs[0].Data[120:])
	// The gRPC generator numbers its rows the same way.
	require.Equal(t, distinctRow(rows, 209)[0], rows[1][0]+2e-9)
	req := inferRequest(grpcLoadConfig{Rows: 3, Raw: true, Sonar: rows}, 0)
	require.Len(t, req.GetRawInputContents()[0], 3*60*8)
	require.Equal(t, []int64{3, 60}, req.GetInputs()[0].GetShape())
	raw := req.GetRawInputContents()[0]
	for k, x := range distinctRow(rows, 2) {
		require.Equal(t, x, math.Float64frombits(binary.LittleEndian.Uint64(raw[8*(120+k):])))
	}
	// A worker's one message, rewritten for each call, holds that call's rows alone.
	calls := newCallBuilder(grpcLoadConfig{Rows: 2, Sonar: rows})
	calls.next(0)
	flat := calls.next(500).GetInputs()[0].GetContents().GetFp64Contents()
	require.Equal(t, append(distinctRow(rows, 500), distinctRow(rows, 501)...), flat)
}

func TestGRPCRowsAreJudgedOnRatios(t *testing.T) {
	t.Parallel()
	rep := report{GRPC: &grpcResult{
		UnaryGRPC: loadResult{Conns: 64, RPS: 10500}, UnaryREST: loadResult{Conns: 64, RPS: 10000},
		BatchRows: 1000, BatchConns: 4,
		BatchGRPC: loadResult{Conns: 4, RPS: 15}, BatchREST: loadResult{Conns: 4, RPS: 10},
		CPUPerCallUS: map[string]map[string]float64{
			"unary_grpc": {"api": 100}, "unary_rest": {"api": 125},
			"batch_grpc": {"api": 10_000}, "batch_rest": {"api": 20_000},
		},
	}}
	met := map[string]bool{}
	cost := map[string]float64{}
	for _, r := range buildRows(rep, options{}) {
		if r.Met != nil {
			met[r.Measure] = *r.Met
		}
		if r.Group == "grpc" && r.Met == nil {
			require.NotNil(t, r.Ratio, r.Measure)
			cost[r.Unit] = *r.Ratio
		}
	}
	// The server-side rows: answers per CPU-second of the api, gRPC against REST.
	require.InDelta(t, 1.25, cost["calls/api-CPU-s"], 1e-9)
	require.InDelta(t, 2.0, cost["rows/api-CPU-s"], 1e-9)
	require.True(t, met["gRPC 64 conns: ModelInfer, one row (fp64_contents), cache misses"], "1.05×")
	require.False(t, met["gRPC 4 conns: ModelInfer, 1,000 rows per call in raw_input_contents, cache misses"], "1.5× < 2×")
}
