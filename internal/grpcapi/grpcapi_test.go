package grpcapi

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/oip"
	pb "github.com/predq/predq/internal/oip/inferencepb"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/telemetry"
)

// The transport's own behaviour (panics, shutdown) with a stand-in for the core whose
// Infer does what the test needs; everything about answers is tested against the real api
// (cmd/api).

const key = "unit-key-0123456789abcdef"

// standIn is the core, except that Infer runs infer.
type standIn struct {
	infer func(ctx context.Context) (oip.InferResponse, error)
	ready atomic.Bool
}

func (s *standIn) ServerLive() bool                   { return true }
func (s *standIn) ServerReady(context.Context) bool   { return s.ready.Load() }
func (s *standIn) ServerMetadata() oip.ServerMetadata { return oip.ServerMetadata{Name: "predq"} }
func (s *standIn) ModelMetadata(context.Context, string, string) (oip.ModelMetadata, error) {
	return oip.ModelMetadata{}, oip.NotFound("none")
}
func (s *standIn) ModelReady(context.Context, string, string) (bool, error) { return false, nil }
func (s *standIn) Infer(ctx context.Context, _ prediction.Meta, _, _ string, _ *oip.InferRequest) (oip.InferResponse, error) {
	return s.infer(ctx)
}

func serve(t *testing.T, inf Inference) (*Server, pb.GRPCInferenceServiceClient, *grpc.ClientConn, chan error) {
	t.Helper()
	keys, err := auth.NewKeys([]string{"unit:" + key}, nil, nil)
	require.NoError(t, err)
	srv, err := New(Config{Inference: inf, Auth: keys, HealthInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown(context.Background())
	})
	return srv, pb.NewGRPCInferenceServiceClient(conn), conn, done
}

func authed(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

var oneRow = &pb.ModelInferRequest{ModelName: "sonar", Inputs: []*pb.ModelInferRequest_InferInputTensor{{
	Name: "features", Datatype: "FP64", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp64Contents: []float64{1}}}}}

func TestPanicIsInternalAndTheServerGoesOn(t *testing.T) {
	t.Parallel()
	_, c, _, _ := serve(t, &standIn{infer: func(context.Context) (oip.InferResponse, error) { panic("boom") }})
	_, err := c.ModelInfer(authed(t), oneRow)
	require.Equal(t, codes.Internal, status.Code(err))
	require.Equal(t, "internal error", status.Convert(err).Message())
	live, err := c.ServerLive(authed(t), &pb.ServerLiveRequest{})
	require.NoError(t, err)
	require.True(t, live.GetLive())
}

func TestHealthFollowsReadiness(t *testing.T) {
	t.Parallel()
	inf := &standIn{}
	_, _, conn, _ := serve(t, inf)
	h := healthpb.NewHealthClient(conn)
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := h.Check(authed(t), &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err)
		return resp.GetStatus()
	}
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check(""), "the server as a whole is live")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(HealthService))
	inf.ready.Store(true)
	require.Eventually(t, func() bool { return check(HealthService) == healthpb.HealthCheckResponse_SERVING },
		5*time.Second, 5*time.Millisecond, "the status follows readiness")
	inf.ready.Store(false)
	require.Eventually(t, func() bool { return check(HealthService) == healthpb.HealthCheckResponse_NOT_SERVING },
		5*time.Second, 5*time.Millisecond)
}

func TestShutdownDrainsThenCancelsAtItsDeadline(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	srv, c, conn, done := serve(t, &standIn{infer: func(ctx context.Context) (oip.InferResponse, error) {
		close(started)
		<-ctx.Done() // a call that never ends by itself
		return oip.InferResponse{}, oip.Unavailable(ctx.Err(), "cancelled")
	}})
	callErr := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(authed(t), oneRow)
		callErr <- err
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		srv.Shutdown(ctx)
		close(stopped)
	}()
	// While it drains, the health service already says NOT_SERVING.
	require.Eventually(t, func() bool {
		resp, err := healthpb.NewHealthClient(conn).Check(authed(t), &healthpb.HealthCheckRequest{})
		return err != nil || resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	}, 5*time.Second, 5*time.Millisecond)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after its deadline")
	}
	require.Error(t, ctx.Err(), "it waited for the call in flight until its deadline")
	require.Error(t, <-callErr, "the call still in flight at the deadline is cancelled")
	require.NoError(t, <-done, "Serve returns nil once stopped")
}

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestCallsContinueTheCallersTrace(t *testing.T) {
	t.Parallel()
	want := "4bf92f3577b34da6a3ce929d0e0e4736"
	keys, err := auth.NewKeys([]string{"unit:" + key}, nil, nil)
	require.NoError(t, err)

	t.Run("recorded: an otelgrpc server span whose parent is the caller's", func(t *testing.T) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		inf := &standIn{infer: func(ctx context.Context) (oip.InferResponse, error) {
			return oip.Response("sonar", "v2.0.0", "", oip.Outputs(), []oip.Row{{Probability: 0.5, Class: "negative", Confidence: 0.5}}), nil
		}}
		srv, err := New(Config{Inference: inf, Auth: keys, TracerProvider: tp, Propagator: propagation.TraceContext{}})
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		_, err = pb.NewGRPCInferenceServiceClient(conn).ModelInfer(metadata.AppendToOutgoingContext(authed(t), "traceparent", traceparent), oneRow)
		require.NoError(t, err)
		var got []string
		for _, s := range rec.Ended() {
			if s.SpanKind() == oteltrace.SpanKindServer {
				got = append(got, s.Name()+" "+s.SpanContext().TraceID().String())
			}
		}
		require.Equal(t, []string{"inference.GRPCInferenceService/ModelInfer " + want}, got)
	})

	t.Run("not recorded: the trace context and ids only", func(t *testing.T) {
		tp, shutdown, err := telemetry.TracerProvider(context.Background(), "api", "test", "")
		require.NoError(t, err)
		t.Cleanup(func() { _ = shutdown(context.Background()) })
		require.True(t, telemetry.RecordsNothing(tp))
		srv, err := New(Config{Inference: &standIn{}, Auth: keys, TracerProvider: tp})
		require.NoError(t, err)
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", traceparent))
		var seen oteltrace.SpanContext
		_, err = srv.traceIDsOnly(tp.Tracer("t"))(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/inference.GRPCInferenceService/ModelInfer"},
			func(ctx context.Context, _ any) (any, error) {
				seen = oteltrace.SpanContextFromContext(ctx)
				return nil, nil
			})
		require.NoError(t, err)
		require.Equal(t, want, seen.TraceID().String())
		require.NotEqual(t, "00f067aa0ba902b7", seen.SpanID().String(), "a span of its own")
	})
}

// The pool of stream workers bounds nothing: calls past it get goroutines of their own, so
// more calls than workers are answered at once (here each call waits for all the others).
func TestCallsBeyondTheStreamWorkersRunAtOnce(t *testing.T) {
	t.Parallel()
	const calls = 8
	var arrived atomic.Int32
	all := make(chan struct{})
	inf := &standIn{infer: func(ctx context.Context) (oip.InferResponse, error) {
		if arrived.Add(1) == calls {
			close(all)
		}
		select {
		case <-all:
			return oip.InferResponse{ModelName: "sonar"}, nil
		case <-ctx.Done():
			return oip.InferResponse{}, oip.Unavailable(ctx.Err(), "not every call was running")
		}
	}}
	keys, err := auth.NewKeys([]string{"unit:" + key}, nil, nil)
	require.NoError(t, err)
	srv, err := New(Config{Inference: inf, Auth: keys, StreamWorkers: 2})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := pb.NewGRPCInferenceServiceClient(conn)
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := c.ModelInfer(authed(t), oneRow)
			errs <- err
		}()
	}
	for range calls {
		require.NoError(t, <-errs)
	}
}
