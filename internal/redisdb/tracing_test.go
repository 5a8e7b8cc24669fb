package redisdb

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/telemetry"
)

// provider returns a tracer provider as the processes make it: recording into the returned
// exporter with record, recording nothing without.
func provider(t testing.TB, record bool) (trace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	exp := tracetest.NewInMemoryExporter()
	var extra []sdktrace.SpanProcessor
	if record {
		extra = append(extra, sdktrace.NewSimpleSpanProcessor(exp))
	}
	tp, shutdown, err := telemetry.TracerProvider(context.Background(), "test", "v0", "", extra...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	require.Equal(t, !record, telemetry.RecordsNothing(tp))
	return tp, exp
}

// pipeline sends n SETs and n GETs in one pipeline and checks the answers.
func pipeline(t testing.TB, ctx context.Context, c redis.UniversalClient, n int) {
	gets := make([]*redis.StringCmd, n)
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			p.Set(ctx, "k"+strconv.Itoa(i), i, 0)
		}
		for i := range n {
			gets[i] = p.Get(ctx, "k"+strconv.Itoa(i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gets {
		if g.Val() != strconv.Itoa(i) {
			t.Fatalf("GET k%d = %q", i, g.Val())
		}
	}
}

func TestOpenTracesWhenSpansAreRecorded(t *testing.T) {
	srv := redistest.New(t)
	ctx := context.Background()

	tp, exp := provider(t, true)
	c, err := open(srv.URL, 0, tp)
	require.NoError(t, err)
	defer c.Close()
	ctx, parent := tp.Tracer("test").Start(ctx, "parent")
	pipeline(t, ctx, c, 3)
	require.NoError(t, c.Ping(ctx).Err())
	parent.End()
	names := map[string]trace.SpanContext{}
	for _, s := range exp.GetSpans() {
		names[s.Name] = s.Parent
	}
	require.Contains(t, names, "ping")
	require.Contains(t, names, "redis.pipeline set get")
	require.Equal(t, parent.SpanContext().SpanID(), names["ping"].SpanID(), "a child of the caller's span")

	// Recording nothing: the client works, without the hook (the pipeline allocates what an
	// untraced client's does, not the hook's attributes and command text).
	tp, exp = provider(t, false)
	quiet, err := open(srv.URL, 0, tp)
	require.NoError(t, err)
	defer quiet.Close()
	bare := srv.Client(t)
	ctx, parent = tp.Tracer("test").Start(context.Background(), "parent")
	defer parent.End()
	allocs := func(c redis.UniversalClient) float64 {
		pipeline(t, ctx, c, 10) // warm the connection
		return testing.AllocsPerRun(50, func() { pipeline(t, ctx, c, 10) })
	}
	require.Equal(t, allocs(bare), allocs(quiet))
	require.Empty(t, exp.GetSpans())
}

// BenchmarkPipelineTracing is what the tracing hook costs a pipeline of 26 SETs and 26 GETs
// (a busy prediction cache's batch) when the process records no span: the hook as it was
// installed before (hook), and the client Open returns now (none).
//
//	go test -run '^$' -bench PipelineTracing -benchmem ./internal/redisdb/
func BenchmarkPipelineTracing(b *testing.B) {
	srv := redistest.New(b)
	tp, _ := provider(b, false)
	ctx, span := tp.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	for _, mode := range []string{"hook", "none"} {
		b.Run(mode, func(b *testing.B) {
			c, err := open(srv.URL, 0, tp)
			require.NoError(b, err)
			defer c.Close()
			if mode == "hook" {
				require.NoError(b, redisotel.InstrumentTracing(c, redisotel.WithTracerProvider(tp)))
			}
			b.ReportAllocs()
			for b.Loop() {
				pipeline(b, ctx, c, 26)
			}
		})
	}
}
