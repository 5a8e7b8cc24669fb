package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Targets of issue 21 for a 10-row job on an idle worker.
const (
	targetSmallSucceededMS = 50.0  // submit → succeeded, p50
	targetSmallWebhookMS   = 100.0 // submit → webhook received, p50
	smallJobRows           = 10
)

// smallJobResult is the small-job measurement: sequential 10-row jobs with a webhook, each
// submitted to an idle worker.
type smallJobResult struct {
	Jobs int `json:"jobs"`
	// Latencies from the client's sending of the submission, in ms, of each job: the 202,
	// succeeded (the job's finished_at, Postgres's clock on this host) and the webhook's
	// arrival at the bench's receiver.
	AcceptedMS  []float64 `json:"accepted_ms"`
	SucceededMS []float64 `json:"succeeded_ms"`
	WebhookMS   []float64 `json:"webhook_ms"`
}

func quantileMS(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(max(int(float64(len(s))*q+0.999999)-1, 0), len(s)-1)]
}

// smallJobPhase submits n 10-row NDJSON jobs one after another, each with a webhook to a
// receiver of the bench's own, and measures submit → 202, → succeeded and → webhook.
func (b *bench) smallJobPhase(ctx context.Context) (*smallJobResult, error) {
	n := 40
	if b.opts.Smoke {
		n = 10
	}
	lines, err := readSonarNDJSON(b.sonar)
	if err != nil {
		return nil, err
	}
	var body bytes.Buffer
	for i := range smallJobRows {
		body.Write(lines[i%len(lines)])
	}

	// The webhook receiver: the arrival time of each job's event.
	var mu sync.Mutex
	arrived := map[string]chan time.Time{}
	wait := func(id string) chan time.Time {
		mu.Lock()
		defer mu.Unlock()
		if arrived[id] == nil {
			arrived[id] = make(chan time.Time, 1)
		}
		return arrived[id]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		var ev struct {
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &ev) == nil && ev.Data.ID != "" {
			select {
			case wait(ev.Data.ID) <- at:
			default: // a repeat
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln) //nolint:errcheck // closed below
	defer srv.Close()
	hook := "http://" + ln.Addr().String() + "/hook"

	client := &http.Client{Timeout: 10 * time.Second}
	res := &smallJobResult{Jobs: n}
	b.log("small jobs: %d sequential %d-row jobs with a webhook", n, smallJobRows)
	for i := range n {
		time.Sleep(50 * time.Millisecond) // an idle worker, as a lone small job finds it
		req, err := http.NewRequestWithContext(ctx, "POST", b.apiURL+"/api/v1/jobs?model_version=v2.0.0&webhook_url="+hook, bytes.NewReader(body.Bytes()))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+b.key)
		req.Header.Set("Content-Type", "application/x-ndjson")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("small job %d: %w", i, err)
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		accepted := time.Since(t0)
		if resp.StatusCode != http.StatusAccepted {
			return nil, fmt.Errorf("small job %d answered %d: %s", i, resp.StatusCode, rb)
		}
		var j struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(rb, &j); err != nil {
			return nil, err
		}
		var hookAt time.Time
		select {
		case hookAt = <-wait(j.ID):
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("small job %s: no webhook within 30 s", j.ID)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		st, _, err := waitJob(ctx, b.apiURL, b.key, j.ID, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if st.Status != "succeeded" || st.FinishedAt == nil {
			return nil, fmt.Errorf("small job %s ended %s", j.ID, st.Status)
		}
		res.AcceptedMS = append(res.AcceptedMS, float64(accepted.Microseconds())/1000)
		res.SucceededMS = append(res.SucceededMS, float64(st.FinishedAt.Sub(t0).Microseconds())/1000)
		res.WebhookMS = append(res.WebhookMS, float64(hookAt.Sub(t0).Microseconds())/1000)
	}
	b.log("small jobs: p50 202 %.1f ms, succeeded %.1f ms, webhook %.1f ms", quantileMS(res.AcceptedMS, 0.5),
		quantileMS(res.SucceededMS, 0.5), quantileMS(res.WebhookMS, 0.5))
	return res, nil
}

// smallJobRows are the table's rows of the small-job measurement: each latency's p50 (and
// p90), and its ratio to the submission's own answer (the 202), the least a job can take.
func smallJobTableRows(s *smallJobResult) []row {
	acc := quantileMS(s.AcceptedMS, 0.5)
	mk := func(what string, xs []float64, target float64) row {
		p50 := quantileMS(xs, 0.5)
		r := row{Group: "job", Measure: fmt.Sprintf("job: %d-row job on an idle worker, submit → %s, p50 (%d jobs)", smallJobRows, what, s.Jobs),
			Value: p50, Unit: "ms", P50MS: ptr(p50),
			Note:   fmt.Sprintf("p90 %.1f ms", quantileMS(xs, 0.9)),
			Target: fmt.Sprintf("≤ %.0f ms", target), Met: ptr(p50 <= target)}
		r.CeilingName, r.Ceiling = "submit → 202 (p50)", ptr(acc)
		if acc > 0 {
			r.Ratio = ptr(p50 / acc)
		}
		return r
	}
	return []row{
		mk("succeeded", s.SucceededMS, targetSmallSucceededMS),
		mk("webhook received", s.WebhookMS, targetSmallWebhookMS),
	}
}
