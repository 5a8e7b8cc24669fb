package main

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

// With DATABASE_READ_URL on a replica whose replay is paused, a job just submitted is found
// (GET /api/v1/jobs/{id} reads the primary) and its results page answers, while the list
// (read on the replica) shows it only once replay resumes.
func TestAPIReadReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rep := pgtest.NewReplicated(t)
	a := startAPI(t, map[string]string{"DATABASE_URL": rep.PrimaryURL, "DATABASE_READ_URL": rep.ReplicaURL})
	xs, _ := sonar(t)

	replica, err := pgx.Connect(ctx, rep.ReplicaURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = replica.Close(ctx) })
	_, err = replica.Exec(ctx, `SELECT pg_wal_replay_pause()`)
	require.NoError(t, err)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var state string
		require.NoError(t, replica.QueryRow(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&state))
		if state == "paused" {
			break
		}
		require.False(t, time.Now().After(deadline), "replay not paused within 30s")
	}

	var job struct {
		ID string `json:"id"`
	}
	require.Equal(t, http.StatusAccepted, a.do("POST", "/api/v1/jobs", map[string]any{"samples": []any{map[string]any{"features": xs[0]}}}, &job))
	require.Equal(t, http.StatusOK, a.do("GET", "/api/v1/jobs/"+job.ID, nil, nil), "a job just submitted is no 404, whatever the replica's lag")
	require.Equal(t, http.StatusOK, a.do("GET", "/api/v1/jobs/"+job.ID+"/results", nil, nil))
	listed := func() bool {
		var list struct {
			Jobs []struct {
				ID string `json:"id"`
			} `json:"jobs"`
		}
		require.Equal(t, http.StatusOK, a.do("GET", "/api/v1/jobs", nil, &list))
		return slices.ContainsFunc(list.Jobs, func(j struct {
			ID string `json:"id"`
		}) bool {
			return j.ID == job.ID
		})
	}
	require.False(t, listed(), "the list reads the paused replica")

	_, err = replica.Exec(ctx, `SELECT pg_wal_replay_resume()`)
	require.NoError(t, err)
	require.Eventually(t, listed, 30*time.Second, 20*time.Millisecond, "the list shows the job once the replica replays it")
}
