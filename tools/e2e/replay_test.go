package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// results streams a job's results as NDJSON and returns the predictions in item order.
func (s *stack) results(id string) []float64 {
	s.t.Helper()
	r := s.call("GET", "/api/v1/jobs/"+id+"/results", nil, map[string]string{"Accept": "application/x-ndjson"})
	require.Equal(s.t, http.StatusOK, r.status, string(r.body))
	var out []float64
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var res struct {
			Index      int      `json:"index"`
			Prediction *float64 `json:"prediction"`
		}
		require.NoError(s.t, json.Unmarshal(sc.Bytes(), &res))
		require.Equal(s.t, len(out), res.Index)
		require.NotNil(s.t, res.Prediction)
		out = append(out, *res.Prediction)
	}
	return out
}

// Issue 23.5: a 20,000-row job replayed on v1.0.0 equals a fresh v1.0.0 job of the same
// rows bit for bit; the comparison reports the two versions' agreement.
func TestReplayEqualsAFreshJob(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "5000"}})
	xs, _ := sonar(t)
	const n = 20_000
	body := ndjsonRows(xs, n)
	submit := func(version string) jobObject {
		r := s.call("POST", "/api/v1/jobs?model_version="+version, bytes.NewReader(body),
			map[string]string{"Content-Type": "application/x-ndjson"})
		require.Equal(t, http.StatusAccepted, r.status, string(r.body))
		var j jobObject
		r.decode(t, &j)
		return j
	}
	orig := submit("v2.0.0")
	r := s.call("POST", "/api/v1/jobs/"+orig.ID+"/replay", map[string]any{"model_version": "v1.0.0"}, nil)
	if r.status != http.StatusConflict { // the worker may have finished it already
		require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	}
	orig = s.waitJob(orig.ID, 2*time.Minute)
	require.Equal(t, "succeeded", orig.Status)

	req, err := http.NewRequest("POST", s.base+"/api/v1/jobs/"+orig.ID+"/replay", strings.NewReader(`{"model_version":"v1.0.0"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+otherKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "another key's job")

	r = s.call("POST", "/api/v1/jobs/"+orig.ID+"/replay", map[string]any{"model_version": "v1.0.0"}, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var rep jobObject
	r.decode(t, &rep)
	require.Equal(t, "/api/v1/jobs/"+rep.ID, r.header.Get("Location"))
	require.Equal(t, n, rep.Total)
	fresh := submit("v1.0.0")
	rep = s.waitJob(rep.ID, 2*time.Minute)
	fresh = s.waitJob(fresh.ID, 2*time.Minute)
	require.Equal(t, "succeeded", rep.Status)
	require.Equal(t, "v1.0.0", rep.ModelVersion)
	require.Equal(t, s.results(fresh.ID), s.results(rep.ID), "the replay equals the fresh job bit for bit")

	r = s.call("GET", "/api/v1/jobs/"+rep.ID+"/comparison", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var cmp struct {
		Complete      bool    `json:"complete"`
		Compared      int     `json:"compared"`
		Agreed        int     `json:"agreed"`
		AgreementRate float64 `json:"agreement_rate"`
		AbsDiff       struct {
			Mean, P50, P90, P99, Max float64
			Histogram                []struct{ Count int }
		} `json:"abs_diff"`
	}
	r.decode(t, &cmp)
	require.True(t, cmp.Complete)
	require.Equal(t, n, cmp.Compared)
	a, b := s.results(orig.ID), s.results(rep.ID)
	agreed, total := 0, 0
	for i := range a {
		if (a[i] > 0.5) == (b[i] > 0.5) {
			agreed++
		}
	}
	for _, h := range cmp.AbsDiff.Histogram {
		total += h.Count
	}
	require.Equal(t, agreed, cmp.Agreed)
	require.Equal(t, n, total)
	t.Logf("v2.0.0 job replayed on v1.0.0: agreement %.4f, |Δp| mean %.4f p50 %.4f p90 %.4f p99 %.4f max %.4f",
		cmp.AgreementRate, cmp.AbsDiff.Mean, cmp.AbsDiff.P50, cmp.AbsDiff.P90, cmp.AbsDiff.P99, cmp.AbsDiff.Max)

	r = s.call("GET", "/api/v1/jobs/"+orig.ID+"/comparison", nil, nil)
	require.Equal(t, http.StatusConflict, r.status, "the original is not a replay: %s", r.body)
}
