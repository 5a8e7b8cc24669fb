package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/predq/predq/internal/localsvc"
	pb "github.com/predq/predq/internal/oip/inferencepb"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
)

// The gRPC front door, driven through a client generated from the vendored proto against the
// whole api (run on free ports, real Postgres and Redis).

// jobsOnlyKey is a static key without the predict scope.
const jobsOnlyKey = "jobs-only-key-0123456789"

// dialGRPC connects to the api's gRPC server.
func dialGRPC(t *testing.T, a *api) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(a.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// withKey is a call context carrying key as "authorization: Bearer KEY" (and more metadata
// pairs), bounded by a deadline.
func withKey(t *testing.T, key string, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if key != "" {
		kv = append(kv, "authorization", "Bearer "+key)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// requireCode fails unless err is a status of code with a message.
func requireCode(t *testing.T, want codes.Code, err error, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, want, st.Code(), append([]any{"status %v"}, err)...)
	require.NotEmpty(t, st.Message())
}

func startGRPCAPI(t *testing.T, env map[string]string) (*api, pb.GRPCInferenceServiceClient, *grpc.ClientConn) {
	t.Helper()
	vars := map[string]string{"API_KEYS": "tester:" + testKey + ",jobsonly:" + jobsOnlyKey + ":jobs"}
	for k, v := range env {
		vars[k] = v
	}
	a := startAPI(t, vars)
	conn := dialGRPC(t, a)
	return a, pb.NewGRPCInferenceServiceClient(conn), conn
}

func TestGRPCEveryCall(t *testing.T) {
	t.Parallel()
	a, c, conn := startGRPCAPI(t, nil)
	xs, _ := sonar(t)

	t.Run("liveness and readiness answer without a key", func(t *testing.T) {
		live, err := c.ServerLive(withKey(t, ""), &pb.ServerLiveRequest{})
		require.NoError(t, err)
		require.True(t, live.GetLive())
		ready, err := c.ServerReady(withKey(t, ""), &pb.ServerReadyRequest{})
		require.NoError(t, err)
		require.True(t, ready.GetReady())
	})

	t.Run("the health service answers SERVING for the server and the inference service", func(t *testing.T) {
		h := healthpb.NewHealthClient(conn)
		for _, svc := range []string{"", "inference.GRPCInferenceService"} {
			resp, err := h.Check(withKey(t, ""), &healthpb.HealthCheckRequest{Service: svc})
			require.NoError(t, err, svc)
			require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), svc)
		}
		_, err := h.Check(withKey(t, ""), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
		requireCode(t, codes.NotFound, err)
	})

	t.Run("the container health check asks the gRPC health service too", func(t *testing.T) {
		noEnv := func(string) string { return "" }
		require.NoError(t, run(context.Background(), []string{"api", "healthcheck", "--url", a.base + "/health/live", "--grpc", a.grpcAddr}, noEnv, io.Discard, io.Discard))
		free, err := localsvc.FreePort()
		require.NoError(t, err)
		err = run(context.Background(), []string{"api", "healthcheck", "--url", a.base + "/health/live", "--grpc", "127.0.0.1:" + strconv.Itoa(free)}, noEnv, io.Discard, io.Discard)
		require.ErrorContains(t, err, "grpc health")
	})

	t.Run("reflection lists the services, as grpcurl reads them", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(withKey(t, ""))
		require.NoError(t, err)
		require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
		resp, err := stream.Recv()
		require.NoError(t, err)
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		require.Subset(t, names, []string{"inference.GRPCInferenceService", "grpc.health.v1.Health"})
		require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "inference.GRPCInferenceService"}}))
		resp, err = stream.Recv()
		require.NoError(t, err)
		require.NotEmpty(t, resp.GetFileDescriptorResponse().GetFileDescriptorProto(), "the proto's descriptor is served")
		require.NoError(t, stream.CloseSend())
	})

	t.Run("server metadata names the server", func(t *testing.T) {
		m, err := c.ServerMetadata(withKey(t, testKey), &pb.ServerMetadataRequest{})
		require.NoError(t, err)
		require.Equal(t, "predq", m.GetName())
		require.Equal(t, "dev", m.GetVersion())
	})

	t.Run("model metadata describes sonar's tensors and versions", func(t *testing.T) {
		for _, version := range []string{"", "v1.0.0", "v2.0.0"} {
			m, err := c.ModelMetadata(withKey(t, testKey), &pb.ModelMetadataRequest{Name: "sonar", Version: version})
			require.NoError(t, err, version)
			require.Equal(t, "sonar", m.GetName())
			require.Equal(t, []string{"v1.0.0", "v2.0.0"}, m.GetVersions())
			require.Len(t, m.GetInputs(), 1)
			require.Equal(t, "features", m.GetInputs()[0].GetName())
			require.Equal(t, []int64{-1, 60}, m.GetInputs()[0].GetShape())
			var outs []string
			for _, o := range m.GetOutputs() {
				outs = append(outs, o.GetName()+":"+o.GetDatatype())
				require.Equal(t, []int64{-1}, o.GetShape())
			}
			require.Equal(t, []string{"probability:FP64", "class:BYTES", "confidence:FP64"}, outs)
		}
	})

	t.Run("model readiness", func(t *testing.T) {
		for _, version := range []string{"", "v1.0.0", "v2.0.0"} {
			r, err := c.ModelReady(withKey(t, testKey), &pb.ModelReadyRequest{Name: "sonar", Version: version})
			require.NoError(t, err, version)
			require.True(t, r.GetReady())
		}
	})

	t.Run("unknown model or version is NOT_FOUND on every call that names one", func(t *testing.T) {
		for _, mv := range [][2]string{{"nope", ""}, {"sonar", "v9.9.9"}, {"sonar", "banana"}} {
			_, err := c.ModelMetadata(withKey(t, testKey), &pb.ModelMetadataRequest{Name: mv[0], Version: mv[1]})
			requireCode(t, codes.NotFound, err, mv)
			_, err = c.ModelReady(withKey(t, testKey), &pb.ModelReadyRequest{Name: mv[0], Version: mv[1]})
			requireCode(t, codes.NotFound, err, mv)
			_, err = c.ModelInfer(withKey(t, testKey), inferFP64(mv[0], mv[1], xs[:1]))
			requireCode(t, codes.NotFound, err, mv)
		}
	})

	t.Run("no key, an unknown key or a key without predict is refused", func(t *testing.T) {
		req := inferFP64("sonar", "", xs[:1])
		for name, ctx := range map[string]context.Context{
			"none":            withKey(t, ""),
			"unknown":         withKey(t, "not-a-key-0123456789abcdef"),
			"not bearer":      metadata.AppendToOutgoingContext(withKey(t, ""), "authorization", "Basic "+testKey),
			"unknown api key": metadata.AppendToOutgoingContext(withKey(t, ""), "x-api-key", "not-a-key-0123456789abcdef"),
		} {
			_, err := c.ModelInfer(ctx, req)
			requireCode(t, codes.Unauthenticated, err, name)
			_, err = c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "sonar"})
			requireCode(t, codes.Unauthenticated, err, name)
			_, err = c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
			requireCode(t, codes.Unauthenticated, err, name)
			_, err = c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "sonar"})
			requireCode(t, codes.Unauthenticated, err, name)
		}
		_, err := c.ModelInfer(withKey(t, jobsOnlyKey), req)
		requireCode(t, codes.PermissionDenied, err)
	})

	t.Run("x-api-key works as authorization does", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(withKey(t, ""), "x-api-key", testKey)
		resp, err := c.ModelInfer(ctx, inferFP64("sonar", "", xs[:1]))
		require.NoError(t, err)
		require.Len(t, resp.GetOutputs(), 3)
	})

	t.Run("one unbatched row, outputs selected, id echoed, request id sent back", func(t *testing.T) {
		req := &pb.ModelInferRequest{ModelName: "sonar", ModelVersion: "v1.0.0", Id: "my-id-1",
			Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP64", Shape: []int64{60},
				Contents: &pb.InferTensorContents{Fp64Contents: xs[5]}}},
			Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "confidence"}, {Name: "class"}},
			Parameters: map[string]*pb.InferParameter{
				"preprocessing":        {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "minmax"}},
				"confidence_threshold": {ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 0.7}},
			}}
		var header metadata.MD
		resp, err := c.ModelInfer(withKey(t, testKey, "x-request-id", "grpc-one-row"), req, grpc.Header(&header))
		require.NoError(t, err)
		require.Equal(t, []string{"grpc-one-row"}, header.Get("x-request-id"))
		require.Equal(t, "my-id-1", resp.GetId())
		require.Equal(t, "sonar", resp.GetModelName())
		require.Equal(t, "v1.0.0", resp.GetModelVersion())
		require.Len(t, resp.GetOutputs(), 2)
		require.Equal(t, "class", resp.GetOutputs()[0].GetName(), "outputs come in the model's order")
		require.Equal(t, "confidence", resp.GetOutputs()[1].GetName())

		var want output
		require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[5],
			"model_version": "v1.0.0", "preprocessing": "minmax", "confidence_threshold": 0.7}, &want))
		require.Equal(t, [][]byte{[]byte(want.PredictionClass)}, resp.GetOutputs()[0].GetContents().GetBytesContents())
		require.Equal(t, []float64{want.Confidence}, resp.GetOutputs()[1].GetContents().GetFp64Contents())
	})

	t.Run("the metrics count the calls and the predictions under the grpc protocol", func(t *testing.T) {
		body := get(t, a.base+"/metrics")
		require.Contains(t, body, `grpc_server_handled_total{grpc_code="OK",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"}`)
		require.Contains(t, body, `grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"}`)
		require.Contains(t, body, `grpc_server_handling_seconds_bucket{grpc_method="ModelMetadata",grpc_service="inference.GRPCInferenceService",grpc_type="unary"`)
		require.Regexp(t, `ml_predictions_total\{model_version="v[12].0.0",protocol="oip_grpc",status="success"\} [1-9]`, body)
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(b)
}

// inferFP64 is a request of rows in fp64_contents, shape [N, 60].
func inferFP64(model, version string, rows [][]float64) *pb.ModelInferRequest {
	var flat []float64
	for _, r := range rows {
		flat = append(flat, r...)
	}
	return &pb.ModelInferRequest{ModelName: model, ModelVersion: version,
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP64",
			Shape: []int64{int64(len(rows)), int64(len(rows[0]))}, Contents: &pb.InferTensorContents{Fp64Contents: flat}}}}
}

// inferRequest is a request of rows in one of the wire forms: fp64, fp32 (typed contents),
// raw64, raw32 (raw_input_contents, little-endian).
func inferRequest(form string, rows [][]float64) *pb.ModelInferRequest {
	req := inferFP64("sonar", "", rows)
	in := req.Inputs[0]
	flat := in.Contents.Fp64Contents
	switch form {
	case "fp32":
		in.Datatype, in.Contents = "FP32", &pb.InferTensorContents{Fp32Contents: make([]float32, len(flat))}
		for i, x := range flat {
			in.Contents.Fp32Contents[i] = float32(x)
		}
	case "raw64":
		b := make([]byte, 8*len(flat))
		for i, x := range flat {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
		in.Contents, req.RawInputContents = nil, [][]byte{b}
	case "raw32":
		b := make([]byte, 4*len(flat))
		for i, x := range flat {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		}
		in.Datatype, in.Contents, req.RawInputContents = "FP32", nil, [][]byte{b}
	}
	return req
}

// inferAnswer is an answer of a ModelInfer call read back in either form.
type inferAnswer struct {
	probability, confidence []float64
	class                   []string
	version                 string
}

func readAnswer(t *testing.T, resp *pb.ModelInferResponse, raw bool) inferAnswer {
	t.Helper()
	ans := inferAnswer{version: resp.GetModelVersion()}
	if raw {
		require.Len(t, resp.GetRawOutputContents(), len(resp.GetOutputs()), "one raw content per output")
	} else {
		require.Empty(t, resp.GetRawOutputContents())
	}
	for i, o := range resp.GetOutputs() {
		if raw {
			require.Nil(t, o.GetContents(), "a raw answer has no typed contents")
		}
		switch o.GetName() {
		case "probability", "confidence":
			require.Equal(t, "FP64", o.GetDatatype())
			v := o.GetContents().GetFp64Contents()
			if raw {
				b := resp.GetRawOutputContents()[i]
				require.Zero(t, len(b)%8)
				v = make([]float64, len(b)/8)
				for j := range v {
					v[j] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*j:]))
				}
			}
			if o.GetName() == "probability" {
				ans.probability = v
			} else {
				ans.confidence = v
			}
		case "class":
			require.Equal(t, "BYTES", o.GetDatatype())
			if raw {
				b := resp.GetRawOutputContents()[i]
				for len(b) > 0 {
					require.GreaterOrEqual(t, len(b), 4)
					n := int(binary.LittleEndian.Uint32(b))
					require.GreaterOrEqual(t, len(b), 4+n)
					ans.class = append(ans.class, string(b[4:4+n]))
					b = b[4+n:]
				}
			} else {
				for _, s := range o.GetContents().GetBytesContents() {
					ans.class = append(ans.class, string(s))
				}
			}
		}
	}
	return ans
}

// postBatch calls /api/v1/predict/batch with rows and request id id.
func postBatch(t *testing.T, a *api, id string, rows [][]float64) []output {
	t.Helper()
	samples := make([]map[string]any, len(rows))
	for i, x := range rows {
		samples[i] = map[string]any{"features": x}
	}
	b, err := json.Marshal(map[string]any{"samples": samples, "parallel": true})
	require.NoError(t, err)
	req, err := http.NewRequest("POST", a.base+"/api/v1/predict/batch", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", id)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Predictions []output `json:"predictions"`
	}
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &out))
	return out.Predictions
}

func TestGRPCInferEqualsV1BatchAndStoresEachComputedAnswerOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewURL(t)
	rds := redistest.New(t)
	a, c, _ := startGRPCAPI(t, map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": rds.URL})
	cache := rds.Client(t)
	xs, _ := sonar(t)
	require.Len(t, xs, 208)
	db, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close(context.Background()) })
	flush := func() { require.NoError(t, cache.FlushAll(context.Background()).Err()) }

	// stored returns the predictions stored under request ids id-0 … id-207 (a batch's
	// sample i gets its request's id and "-i"), by index.
	stored := func(id string) map[int]output {
		rows, err := db.Query(context.Background(), `SELECT request_id, prediction, confidence, prediction_class, model_version
			FROM predictions WHERE request_id ~ ('^' || $1 || '-[0-9]+$')`, id)
		require.NoError(t, err)
		out := map[int]output{}
		for rows.Next() {
			var rid string
			var o output
			require.NoError(t, rows.Scan(&rid, &o.Prediction, &o.Confidence, &o.PredictionClass, &o.ModelVersion))
			i, err := strconv.Atoi(strings.TrimPrefix(rid, id+"-"))
			require.NoError(t, err, rid)
			_, dup := out[i]
			require.False(t, dup, "%s stored twice", rid)
			out[i] = o
		}
		require.NoError(t, rows.Err())
		return out
	}

	for _, form := range []string{"fp64", "fp32", "raw64", "raw32"} {
		t.Run(form, func(t *testing.T) {
			raw := strings.HasPrefix(form, "raw")
			rows := xs
			if strings.HasSuffix(form, "32") { // what the server reads: the float32 nearest each value
				rows = make([][]float64, len(xs))
				for i, x := range xs {
					rows[i] = make([]float64, len(x))
					for j, v := range x {
						rows[i][j] = float64(float32(v))
					}
				}
			}
			// Each side computes its own answers: the cache is emptied before each.
			flush()
			grpcID := "grpc-" + form
			resp, err := c.ModelInfer(withKey(t, testKey, "x-request-id", grpcID), inferRequest(form, xs))
			require.NoError(t, err)
			got := readAnswer(t, resp, raw)
			flush()
			restID := "rest-" + form
			want := postBatch(t, a, restID, rows)

			require.Len(t, got.probability, 208)
			require.Len(t, got.confidence, 208)
			require.Len(t, got.class, 208)
			for i, w := range want {
				require.False(t, w.Cached)
				require.Equal(t, math.Float64bits(w.Prediction), math.Float64bits(got.probability[i]), "row %d probability", i)
				require.Equal(t, math.Float64bits(w.Confidence), math.Float64bits(got.confidence[i]), "row %d confidence", i)
				require.Equal(t, w.PredictionClass, got.class[i], "row %d", i)
				require.Equal(t, w.ModelVersion, got.version)
			}

			// Each computed answer is stored once, under its request id, with its numbers.
			g, r := stored(grpcID), stored(restID)
			require.Len(t, g, 208)
			require.Len(t, r, 208)
			for i := range 208 {
				require.Equal(t, math.Float64bits(got.probability[i]), math.Float64bits(g[i].Prediction), "row %d", i)
				require.Equal(t, g[i], r[i], "row %d", i)
			}

			// The same call again is answered from the cache: equal answers, nothing stored.
			again, err := c.ModelInfer(withKey(t, testKey, "x-request-id", grpcID+"-again"), inferRequest(form, xs))
			require.NoError(t, err)
			require.Equal(t, got, readAnswer(t, again, raw))
			require.Empty(t, stored(grpcID+"-again"), "cache hits are not stored again")
		})
	}
}

func TestGRPCBadInputIsInvalidArgument(t *testing.T) {
	t.Parallel()
	a, c, _ := startGRPCAPI(t, nil)
	xs, _ := sonar(t)
	row := xs[0]
	fp64 := func(shape []int64, data []float64) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "sonar", Inputs: []*pb.ModelInferRequest_InferInputTensor{{
			Name: "features", Datatype: "FP64", Shape: shape, Contents: &pb.InferTensorContents{Fp64Contents: data}}}}
	}
	rows := func(n int) []float64 {
		out := make([]float64, 0, n*60)
		for i := range n {
			out = append(out, xs[i%len(xs)]...)
		}
		return out
	}
	with := func(f func(r *pb.ModelInferRequest)) *pb.ModelInferRequest {
		r := fp64([]int64{1, 60}, row)
		f(r)
		return r
	}
	param := func(k string, p *pb.InferParameter) func(r *pb.ModelInferRequest) {
		return func(r *pb.ModelInferRequest) { r.Parameters = map[string]*pb.InferParameter{k: p} }
	}
	rawOf := func(n int) []byte { return make([]byte, n) }
	big := append([]float64(nil), row...)
	big[7] = 1001
	nan := append([]float64(nil), row...)
	nan[3] = math.NaN()
	inf := append([]float64(nil), row...)
	inf[3] = math.Inf(1)

	corpus := map[string]*pb.ModelInferRequest{
		"no inputs":        with(func(r *pb.ModelInferRequest) { r.Inputs = nil }),
		"two inputs":       with(func(r *pb.ModelInferRequest) { r.Inputs = append(r.Inputs, r.Inputs[0]) }),
		"wrong input name": with(func(r *pb.ModelInferRequest) { r.Inputs[0].Name = "x" }),
		"no datatype":      with(func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "" }),
		"unknown datatype": with(func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "FLOAT" }),
		"INT32 datatype": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Datatype, r.Inputs[0].Contents = "INT32", &pb.InferTensorContents{IntContents: make([]int32, 60)}
		}),
		"FP16 raw": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Datatype, r.Inputs[0].Contents, r.RawInputContents = "FP16", nil, [][]byte{rawOf(120)}
		}),
		"FP64 in fp32": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Contents = &pb.InferTensorContents{Fp32Contents: make([]float32, 60)}
		}),
		"FP32 in fp64":        with(func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "FP32" }),
		"two contents":        with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents.Int64Contents = []int64{1} }),
		"no contents":         with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents = nil }),
		"no shape":            fp64(nil, row),
		"shape [2, 60]":       fp64([]int64{2, 60}, row),
		"shape [60, 1]":       fp64([]int64{60, 1}, row),
		"shape [-1, 60]":      fp64([]int64{-1, 60}, row),
		"shape [0, 60]":       fp64([]int64{0, 60}, nil),
		"shape [1, 59]":       fp64([]int64{1, 59}, row[:59]),
		"shape [61]":          fp64([]int64{61}, append(append([]float64(nil), row...), 0)),
		"shape of rank 9":     fp64([]int64{1, 1, 1, 1, 1, 1, 1, 1, 60}, row),
		"shape [1, 1, 60]":    fp64([]int64{1, 1, 60}, row),
		"59 elements":         fp64([]int64{1, 60}, row[:59]),
		"huge N, little data": fp64([]int64{math.MaxInt64, 60}, row),
		"N of 4e9":            fp64([]int64{4_000_000_000, 60}, row),
		"N past the limit":    fp64([]int64{1001, 60}, rows(1001)),
		"N far past":          fp64([]int64{5000, 60}, rows(5000)),
		"a feature > 1000":    fp64([]int64{1, 60}, big),
		"NaN":                 fp64([]int64{1, 60}, nan),
		"Inf":                 fp64([]int64{1, 60}, inf),
		"raw and contents":    with(func(r *pb.ModelInferRequest) { r.RawInputContents = [][]byte{rawOf(480)} }),
		"two raws for one input": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Contents, r.RawInputContents = nil, [][]byte{rawOf(480), rawOf(480)}
		}),
		"raw not whole FP64": with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents, r.RawInputContents = nil, [][]byte{rawOf(477)} }),
		"raw not whole FP32": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Datatype, r.Inputs[0].Contents, r.RawInputContents = "FP32", nil, [][]byte{rawOf(239)}
		}),
		"raw 59 elements":     with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents, r.RawInputContents = nil, [][]byte{rawOf(59 * 8)} }),
		"raw 2 rows for 1":    with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents, r.RawInputContents = nil, [][]byte{rawOf(960)} }),
		"raw empty":           with(func(r *pb.ModelInferRequest) { r.Inputs[0].Contents, r.RawInputContents = nil, [][]byte{{}} }),
		"preprocessing int":   with(param("preprocessing", &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5}})),
		"preprocessing bogus": with(param("preprocessing", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "zscore"}})),
		"robust on v1.0.0": with(func(r *pb.ModelInferRequest) {
			r.ModelVersion = "v1.0.0"
			param("preprocessing", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "robust"}})(r)
		}),
		"threshold 2":        with(param("confidence_threshold", &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 2}})),
		"threshold 0":        with(param("confidence_threshold", &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 0}})),
		"threshold string":   with(param("confidence_threshold", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "0.5"}})),
		"threshold NaN":      with(param("confidence_threshold", &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: math.NaN()}})),
		"parameter no value": with(param("confidence_threshold", &pb.InferParameter{})),
		"parameter uint64":   with(param("confidence_threshold", &pb.InferParameter{ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: math.MaxUint64}})),
		"unknown parameter":  with(param("temperature", &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}})),
		"input parameter": with(func(r *pb.ModelInferRequest) {
			r.Inputs[0].Parameters = map[string]*pb.InferParameter{"x": {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}}}
		}),
		"unknown output": with(func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits"}}
		}),
		"output twice": with(func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "class"}, {Name: "class"}}
		}),
		"output parameter": with(func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "class",
				Parameters: map[string]*pb.InferParameter{"binary_data": {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}}}}}
		}),
		"id too long": with(func(r *pb.ModelInferRequest) { r.Id = strings.Repeat("i", 300) }),
	}
	for name, req := range corpus {
		_, err := c.ModelInfer(withKey(t, testKey), req)
		requireCode(t, codes.InvalidArgument, err, name)
		t.Logf("%-22s %s", name, status.Convert(err).Message())
	}

	t.Run("a message past the size limit is RESOURCE_EXHAUSTED, from gRPC itself", func(t *testing.T) {
		_, err := c.ModelInfer(withKey(t, testKey), fp64([]int64{9000, 60}, rows(9000)))
		requireCode(t, codes.ResourceExhausted, err)
	})

	t.Run("the api still answers, and counted no internal error", func(t *testing.T) {
		live, err := c.ServerLive(withKey(t, ""), &pb.ServerLiveRequest{})
		require.NoError(t, err)
		require.True(t, live.GetLive())
		body := get(t, a.base+"/metrics")
		require.Contains(t, body, `grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"} `+strconv.Itoa(len(corpus)))
		require.NotContains(t, body, `grpc_code="Internal"`)
		require.NotContains(t, body, `grpc_code="Unknown"`)
	})
}

func TestGRPCSharesTheKeysRateLimitWithHTTP(t *testing.T) {
	t.Parallel()
	a, c, _ := startGRPCAPI(t, map[string]string{"RATE_LIMIT": "0.01", "RATE_BURST": "3"})
	for i := range 3 {
		_, err := c.ServerMetadata(withKey(t, testKey), &pb.ServerMetadataRequest{})
		require.NoError(t, err, "call %d is within the burst", i)
	}
	var trailer metadata.MD
	_, err := c.ServerMetadata(withKey(t, testKey), &pb.ServerMetadataRequest{}, grpc.Trailer(&trailer))
	requireCode(t, codes.ResourceExhausted, err)
	secs, err := strconv.Atoi(strings.Join(trailer.Get("retry-after"), ""))
	require.NoError(t, err, "retry-after trailer %v", trailer)
	require.Positive(t, secs)
	require.Equal(t, http.StatusTooManyRequests, a.do("GET", "/api/v1/models", nil, nil), "the HTTP door draws on the same allowance")
	live, err := c.ServerLive(withKey(t, ""), &pb.ServerLiveRequest{})
	require.NoError(t, err, "liveness is not limited")
	require.True(t, live.GetLive())
}
