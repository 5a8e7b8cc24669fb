package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/client"
)

func newClient(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{BaseURL: srv.URL, APIKey: "k-123"})
	require.NoError(t, err)
	return c
}

func TestProblemAnswers(t *testing.T) {
	t.Parallel()
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/jobs":
			require.Equal(t, "Bearer k-123", r.Header.Get("Authorization"))
			require.Equal(t, "text/csv", r.Header.Get("Content-Type"))
			require.Equal(t, "v1.0.0", r.URL.Query().Get("model_version"))
			require.Equal(t, []string{"team=risk"}, r.URL.Query()["metadata"])
			require.Equal(t, "idem-1", r.Header.Get("Idempotency-Key"))
			b, _ := io.ReadAll(r.Body)
			require.Equal(t, "1,2\n", string(b))
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"type":"https://predq.dev/problems/validation-error","title":"Invalid input","status":422,
				"errors":[{"field":"rows[1].features","message":"must have 60 values, got 2"}]}`)
		case "/api/v1/models":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"title":"Unauthorized","status":401}`)
		default:
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>bad gateway</html>")
		}
	}))
	ctx := context.Background()
	_, err := c.SubmitJob(ctx, client.FormatCSV, strings.NewReader("1,2\n"), client.SubmitOptions{
		ModelVersion: "v1.0.0", Metadata: map[string]string{"team": "risk"}, IdempotencyKey: "idem-1"})
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	require.Equal(t, 422, p.Status)
	require.Equal(t, "Invalid input", p.Title)
	require.Equal(t, []client.FieldError{{Field: "rows[1].features", Message: "must have 60 values, got 2"}}, p.Errors)
	require.False(t, p.Auth())

	_, err = c.ListModels(ctx)
	require.ErrorAs(t, err, &p)
	require.True(t, p.Auth())

	_, err = c.GetJob(ctx, "x")
	require.ErrorAs(t, err, &p)
	require.Equal(t, 502, p.Status)
	require.Equal(t, "Bad Gateway", p.Title, "a body that is not problem+json: the status text")
	require.Contains(t, p.Detail, "bad gateway")
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	c, err := client.New(client.Config{BaseURL: "http://" + addr})
	require.NoError(t, err)
	_, err = c.GetJob(context.Background(), "x")
	require.ErrorIs(t, err, client.ErrUnreachable)
	var p *client.Problem
	require.False(t, errors.As(err, &p))
}

// A dropped event stream is reopened with the id of the last event seen.
func TestFollowJobReconnectsWithLastEventID(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var lastIDs []string
	job := func(status string, done int) string {
		return fmt.Sprintf(`{"id":"j1","status":%q,"total":300,"processed":%d,"failed":0}`, status, done)
	}
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/api/v1/jobs/j1/events", r.URL.Path)
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		n := len(lastIDs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		fmt.Fprint(w, "retry: 10\n\n")
		switch n {
		case 1: // two events, then the connection drops mid-event
			fmt.Fprintf(w, "event: progress\nid: 100\ndata: %s\n\n", job("running", 100))
			fmt.Fprint(w, ": keep-alive\n\n")
			fmt.Fprintf(w, "event: progress\nid: 200\ndata: %s\n\n", job("running", 200))
			fmt.Fprint(w, "event: progress\nid: 250\ndata: {\"id\":")
			f.Flush()
			hj, ok := w.(http.Hijacker)
			require.True(t, ok)
			conn, _, err := hj.Hijack()
			require.NoError(t, err)
			conn.Close()
		case 2: // the stream ends cleanly before the job does
			fmt.Fprintf(w, "event: progress\nid: 280\ndata: %s\n\n", job("running", 280))
		default:
			fmt.Fprintf(w, "event: progress\nid: 300\ndata: %s\n\n", job("succeeded", 300))
			fmt.Fprintf(w, "event: status\nid: 300\ndata: %s\n\n", job("succeeded", 300))
		}
	}))
	var seen []int
	reconnects := 0
	j, err := c.FollowJob(context.Background(), "j1", client.FollowOptions{
		OnReconnect: func(int, error) { reconnects++ },
	}, func(ev client.Event) { seen = append(seen, ev.Job.Processed) })
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.Equal(t, 300, j.Processed)
	require.Equal(t, []int{100, 200, 280, 300}, seen, "the status event ends the stream; the progress before it is seen once")
	require.Equal(t, []string{"", "200", "280"}, lastIDs)
	require.Equal(t, 2, reconnects)
}

func TestFollowJobGivesUpAfterReconnects(t *testing.T) {
	t.Parallel()
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 1\n\n")
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.FollowJob(ctx, "j1", client.FollowOptions{Reconnects: 3}, func(client.Event) {})
	require.ErrorContains(t, err, "ended before the job did")
}

func TestNewRefusesABadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		_, err := client.New(client.Config{BaseURL: u})
		require.Error(t, err, u)
	}
}
