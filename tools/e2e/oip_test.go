package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/oipcheck"
)

// The conformance checker passes every check against the real api process.
func TestOIPCheckPassesAgainstTheAPI(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true})
	var out bytes.Buffer
	rep, err := oipcheck.Run(context.Background(), oipcheck.Config{URL: s.base, APIKey: apiKey, Model: "sonar"}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	require.True(t, rep.OK(), "every check passes:\n%s", out.String())
	require.Zero(t, rep.Count(oipcheck.NA), "every check applies to predq:\n%s", out.String())
	require.GreaterOrEqual(t, rep.Count(oipcheck.Pass), 20)

	// Against a wrong key every keyed check fails, and the report says so.
	rep, err = oipcheck.Run(context.Background(), oipcheck.Config{URL: s.base, APIKey: "wrong-key-0123456789abcdef"}, nil)
	require.NoError(t, err)
	require.False(t, rep.OK())
}

// oipInfer is the part of an inference response the tests read.
type oipInfer struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name  string          `json:"name"`
		Shape []int           `json:"shape"`
		Data  json.RawMessage `json:"data"`
	} `json:"outputs"`
}

func inferBody(t *testing.T, id string, rows [][]float64) []byte {
	t.Helper()
	flat := make([]float64, 0, len(rows)*60)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	b, err := json.Marshal(map[string]any{"id": id, "parameters": map[string]any{"confidence_threshold": 0.8},
		"inputs": []any{map[string]any{"name": "features", "datatype": "FP64", "shape": []int{len(rows), 60}, "data": flat}}})
	require.NoError(t, err)
	return b
}

// A 50,000-row infer with Prefer: respond-async is a job whose result is exactly the
// $inference_response of the same rows answered synchronously.
func TestOIPAsyncInferMatchesSync(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{})
	xs, _ := sonar(t)
	const n = 50_000
	rows := make([][]float64, n)
	for i := range rows { // distinct rows: each sonar row scaled a little per pass
		rows[i] = make([]float64, 60)
		f := 1 + float64(i/len(xs))*1e-3
		for j, v := range xs[i%len(xs)] {
			rows[i][j] = math.Round(v*f*1e6) / 1e6
		}
	}
	body := inferBody(t, "big", rows)

	// Without the header: refused, naming it (413 here: the body is over BODY_LIMIT; rows
	// over MAX_BATCH_SIZE in a smaller body are a 400, as cmd/api's tests show).
	r := s.call("POST", "/v2/models/sonar/infer", body, map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status, string(r.body))
	require.Contains(t, string(r.body), `Prefer: respond-async`)
	r = s.call("POST", "/v2/models/sonar/infer", inferBody(t, "", rows[:1001]), map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusBadRequest, r.status, string(r.body))
	require.Contains(t, string(r.body), `Prefer: respond-async`)

	r = s.call("POST", "/v2/models/sonar/infer", body, map[string]string{"Content-Type": "application/json", "Prefer": "respond-async"})
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	require.Equal(t, "respond-async", r.header.Get("Preference-Applied"))
	loc := r.header.Get("Location")
	require.True(t, strings.HasPrefix(loc, "/v2/jobs/"), loc)
	var j struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Total  int    `json:"total"`
		Result string `json:"result"`
	}
	r.decode(t, &j)
	require.Equal(t, n, j.Total)
	require.Equal(t, loc+"/result", j.Result)

	// Before it ends the result is a 409 in the protocol's shape (or already there).
	r = s.call("GET", j.Result, nil, nil)
	require.Contains(t, []int{http.StatusConflict, http.StatusOK}, r.status, string(r.body))
	require.Eventually(t, func() bool {
		r = s.call("GET", loc, nil, nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		r.decode(t, &j)
		require.NotContains(t, []string{"failed", "cancelled"}, j.Status, string(r.body))
		return j.Status == "succeeded"
	}, 5*time.Minute, 200*time.Millisecond, "job %s: worker log %s", loc, s.logs("worker"))
	r = s.call("GET", j.Result, nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body[:min(len(r.body), 500)]))
	var async oipInfer
	r.decode(t, &async)
	require.Equal(t, "big", async.ID)
	require.Equal(t, "sonar", async.ModelName)
	require.Len(t, async.Outputs, 3)

	// The same rows, synchronously, 1,000 at a time (MAX_BATCH_SIZE): the same answer.
	var probs, confs []float64
	var classes []string
	for off := 0; off < n; off += 1000 {
		r := s.call("POST", "/v2/models/sonar/infer", inferBody(t, "big", rows[off:off+1000]), map[string]string{"Content-Type": "application/json"})
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var sync oipInfer
		r.decode(t, &sync)
		require.Equal(t, async.ModelVersion, sync.ModelVersion)
		var p, c []float64
		var k []string
		require.NoError(t, json.Unmarshal(sync.Outputs[0].Data, &p))
		require.NoError(t, json.Unmarshal(sync.Outputs[1].Data, &k))
		require.NoError(t, json.Unmarshal(sync.Outputs[2].Data, &c))
		probs, classes, confs = append(probs, p...), append(classes, k...), append(confs, c...)
	}
	var ap, ac []float64
	var ak []string
	require.NoError(t, json.Unmarshal(async.Outputs[0].Data, &ap))
	require.NoError(t, json.Unmarshal(async.Outputs[1].Data, &ak))
	require.NoError(t, json.Unmarshal(async.Outputs[2].Data, &ac))
	require.Equal(t, []int{n}, async.Outputs[0].Shape)
	require.Len(t, ap, n)
	for i := range ap {
		require.Equal(t, probs[i], ap[i], "row %d", i)
		require.Equal(t, confs[i], ac[i], "row %d", i)
		require.Equal(t, classes[i], ak[i], "row %d", i)
	}

	// Idempotency-Key: the same key and body answer the first 202 again, no second job.
	small := inferBody(t, "small", rows[:3])
	hdr := map[string]string{"Content-Type": "application/json", "Prefer": "respond-async", "Idempotency-Key": "oip-async-1"}
	first := s.call("POST", "/v2/models/sonar/infer", small, hdr)
	require.Equal(t, http.StatusAccepted, first.status, string(first.body))
	again := s.call("POST", "/v2/models/sonar/infer", small, hdr)
	require.Equal(t, http.StatusAccepted, again.status, string(again.body))
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, "respond-async", again.header.Get("Preference-Applied"))
	require.Equal(t, first.header.Get("Location"), again.header.Get("Location"))
	require.Equal(t, string(first.body), string(again.body))
	other := s.call("POST", "/v2/models/sonar/infer", inferBody(t, "small", rows[3:6]), hdr)
	require.Equal(t, http.StatusBadRequest, other.status, string(other.body))
	require.Contains(t, string(other.body), `"error"`)
	// The same key and body without the preference is another request too.
	syncHdr := map[string]string{"Content-Type": "application/json", "Idempotency-Key": "oip-async-1"}
	other = s.call("POST", "/v2/models/sonar/infer", small, syncHdr)
	require.Equal(t, http.StatusBadRequest, other.status, string(other.body))
	require.Contains(t, string(other.body), "Idempotency-Key")
}
