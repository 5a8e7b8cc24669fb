package startup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/startup"
)

// logs is a concurrency-safe buffer of JSON log lines.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// line returns the first line whose msg is msg, decoded.
func (l *logs) line(t *testing.T, msg string) map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %q line in %s", msg, l.buf.String())
	return nil
}

func TestOpenAndClose(t *testing.T) {
	t.Parallel()

	t.Run("OpensEverythingAndClosesItAll", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		out := &logs{}
		p, err := startup.Open(ctx, startup.Options{
			Service: "worker", Version: "v-test", Stdout: out, LogLevel: "info", LogArgs: []any{"port", 8080},
			PprofAddr:   "127.0.0.1:0",
			DatabaseURL: pgtest.NewURL(t), DBPoolSize: 3,
			RedisURL: redistest.New(t).URL, RedisTimeout: time.Second,
		})
		require.NoError(t, err)

		start := out.line(t, "starting")
		require.Equal(t, "worker", start["service"])
		require.Equal(t, "v-test", start["version"])
		require.EqualValues(t, 8080, start["port"])

		require.NoError(t, p.Pool.Ping(ctx))
		require.EqualValues(t, 3, p.Pool.Config().MaxConns)
		require.NoError(t, p.Redis.Ping(ctx).Err())
		require.NotEmpty(t, p.RedisOpts.Addrs)
		families, err := p.Registry.Gather()
		require.NoError(t, err)
		require.NotEmpty(t, families, "the Go and process collectors")
		require.NotNil(t, p.Tracer.Tracer("t"))

		pprofAddr := out.line(t, "pprof listening")["addr"].(string)
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)

		p.Close()
		require.Error(t, p.Pool.Ping(ctx), "pool closed")
		require.Error(t, p.Redis.Ping(ctx).Err(), "Redis client closed")
		stopped := out.line(t, "pprof stopped")
		require.Equal(t, pprofAddr, stopped["addr"], "pprof listener closed")
		require.Nil(t, stopped["error"])
	})

	t.Run("NoPoolWithoutADatabase", func(t *testing.T) {
		t.Parallel()
		p, err := startup.Open(context.Background(), startup.Options{
			Service: "scheduler", Stdout: &logs{}, LogLevel: "warn", RedisURL: redistest.New(t).URL,
		})
		require.NoError(t, err)
		defer p.Close()
		require.Nil(t, p.Pool)
	})

	t.Run("AFailureClosesWhatWasOpened", func(t *testing.T) {
		t.Parallel()
		out := &logs{}
		_, err := startup.Open(context.Background(), startup.Options{
			Service: "api", Stdout: out, LogLevel: "info", PprofAddr: "127.0.0.1:0",
			DatabaseURL: pgtest.NewURL(t), RedisURL: "redis-sentinel://h1:1/0", // no master named
		})
		require.ErrorContains(t, err, "REDIS_URL: ")
		// The closer's own record, not a dial of the freed port: under parallel tests another
		// process may bind that ephemeral port as soon as it is closed.
		stopped := out.line(t, "pprof stopped")
		require.Equal(t, out.line(t, "pprof listening")["addr"], stopped["addr"], "pprof listener closed")
		require.Nil(t, stopped["error"])
	})
}
