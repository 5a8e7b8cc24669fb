package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

// TestRun starts the scheduler through run on a free port against a throwaway Redis, as
// main does, and stops it as a signal would.
func TestRun(t *testing.T) {
	t.Parallel()

	t.Run("EnqueuesItsTasksServesHealthAndStops", func(t *testing.T) {
		t.Parallel()
		rs := redistest.New(t)
		vars := map[string]string{"REDIS_URL": rs.URL, "SCHEDULER_METRICS_PORT": "0", "RECONCILE_INTERVAL": "1s"}
		pr, pw := io.Pipe()
		addr := make(chan string, 1)
		var logs strings.Builder // read once the scanner is done
		scanned := make(chan struct{})
		go func() {
			defer close(scanned)
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				logs.WriteString(sc.Text() + "\n")
				var rec struct{ Msg, Addr string }
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "ops endpoints listening" {
					addr <- rec.Addr
				}
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var runErr error
		go func() {
			defer close(done)
			runErr = run(ctx, []string{"scheduler"}, func(k string) string { return vars[k] }, pw, io.Discard)
			pw.Close()
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			<-scanned
			if t.Failed() {
				t.Log(logs.String())
			}
		})

		var base string
		select {
		case a := <-addr:
			_, port, err := net.SplitHostPort(a)
			require.NoError(t, err)
			base = "http://127.0.0.1:" + port
		case <-done:
			t.Fatalf("scheduler exited: %v", runErr)
		case <-time.After(20 * time.Second):
			t.Fatal("the scheduler did not log its ops address")
		}
		resp, err := http.Get(base + "/health/ready")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)

		rdb := rs.Client(t)
		require.Eventually(t, func() bool {
			keys, err := rdb.Keys(context.Background(), "asynq:{low}:t:maintenance:reconcile:*").Result()
			return err == nil && len(keys) >= 2
		}, 15*time.Second, 50*time.Millisecond, "one reconcile task per one-second slot")

		cancel()
		select {
		case <-done:
			require.NoError(t, runErr)
		case <-time.After(15 * time.Second):
			t.Fatal("run did not return after cancel")
		}
		_, err = http.Get(base + "/health/live")
		require.Error(t, err, "the ops server stopped with the scheduler")
	})

	t.Run("BadConfigNamesTheVariable", func(t *testing.T) {
		t.Parallel()
		err := run(context.Background(), []string{"scheduler"}, func(k string) string {
			return map[string]string{"RECONCILE_INTERVAL": "0s", "REDIS_URL": "http://x"}[k]
		}, io.Discard, io.Discard)
		require.ErrorContains(t, err, "RECONCILE_INTERVAL: must be between 1s and 24h0m0s")
		require.ErrorContains(t, err, "REDIS_URL: must use scheme")
		require.True(t, strings.HasPrefix(err.Error(), "config:\n"), err.Error())
	})
}
