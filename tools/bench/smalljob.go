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
	fairSmallRows          = 200 // the fair share's small jobs
	targetFairRatio        = 2.0 // their p50 while a big job runs / on an idle system
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
	// The fair share: submit → succeeded, in ms, of 200-row jobs of one key on an idle
	// system, then while another key's job of FairBigRows rows runs.
	FairIdleMS   []float64 `json:"fair_idle_ms"`
	FairLoadedMS []float64 `json:"fair_loaded_ms"`
	FairBigRows  int       `json:"fair_big_rows"`
	// FairBigDoneBefore: how many of the jobs measured while the big job ran finished before it.
	FairBigDoneBefore int `json:"fair_big_done_before"`
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
	hookURL := "http://" + ln.Addr().String() + "/hook"

	client := &http.Client{Timeout: 10 * time.Second}
	// one submits a job of body with key and returns its id and the 202's latency; hook: it
	// waits for the job's webhook and its end, and returns their latencies too.
	one := func(key string, body []byte, hook bool) (id string, accepted, succeeded, webhook time.Duration, err error) {
		url := b.apiURL + "/api/v1/jobs?model_version=v2.0.0"
		if hook {
			url += "&webhook_url=" + hookURL
		}
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return "", 0, 0, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/x-ndjson")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return "", 0, 0, 0, err
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		accepted = time.Since(t0)
		if resp.StatusCode != http.StatusAccepted {
			return "", 0, 0, 0, fmt.Errorf("answered %d: %s", resp.StatusCode, rb)
		}
		var j struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(rb, &j); err != nil {
			return "", 0, 0, 0, err
		}
		if !hook {
			return j.ID, accepted, 0, 0, nil
		}
		select {
		case at := <-wait(j.ID):
			webhook = at.Sub(t0)
		case <-time.After(30 * time.Second):
			return "", 0, 0, 0, fmt.Errorf("job %s: no webhook within 30 s", j.ID)
		case <-ctx.Done():
			return "", 0, 0, 0, ctx.Err()
		}
		st, _, err := waitJob(ctx, b.apiURL, key, j.ID, 5*time.Minute)
		if err != nil {
			return "", 0, 0, 0, err
		}
		if st.Status != "succeeded" || st.FinishedAt == nil {
			return "", 0, 0, 0, fmt.Errorf("job %s ended %s", j.ID, st.Status)
		}
		return j.ID, accepted, st.FinishedAt.Sub(t0), webhook, nil
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

	res := &smallJobResult{Jobs: n}
	b.log("small jobs: %d sequential %d-row jobs with a webhook", n, smallJobRows)
	for i := range n {
		time.Sleep(50 * time.Millisecond) // an idle worker, as a lone small job finds it
		_, acc, done, hooked, err := one(b.key, body.Bytes(), true)
		if err != nil {
			return nil, fmt.Errorf("small job %d: %w", i, err)
		}
		res.AcceptedMS = append(res.AcceptedMS, ms(acc))
		res.SucceededMS = append(res.SucceededMS, ms(done))
		res.WebhookMS = append(res.WebhookMS, ms(hooked))
	}
	b.log("small jobs: p50 202 %.1f ms, succeeded %.1f ms, webhook %.1f ms", quantileMS(res.AcceptedMS, 0.5),
		quantileMS(res.SucceededMS, 0.5), quantileMS(res.WebhookMS, 0.5))

	// Fair share: 200-row jobs of one key (submit → succeeded, from the job's finished_at and
	// the client's clock) on an idle system, then while another key's big job runs.
	var fair bytes.Buffer
	for i := range fairSmallRows {
		fair.Write(lines[i%len(lines)])
	}
	small := func(key string) (time.Duration, time.Time, error) {
		t0 := time.Now()
		id, _, _, _, err := one(key, fair.Bytes(), false)
		if err != nil {
			return 0, time.Time{}, err
		}
		st, _, err := waitJob(ctx, b.apiURL, key, id, 5*time.Minute)
		if err != nil {
			return 0, time.Time{}, err
		}
		if st.Status != "succeeded" || st.FinishedAt == nil {
			return 0, time.Time{}, fmt.Errorf("job %s ended %s", id, st.Status)
		}
		return st.FinishedAt.Sub(t0), *st.FinishedAt, nil
	}
	m := 10
	for i := range m {
		time.Sleep(50 * time.Millisecond)
		done, _, err := small(b.key)
		if err != nil {
			return nil, fmt.Errorf("fair share, idle job %d: %w", i, err)
		}
		res.FairIdleMS = append(res.FairIdleMS, ms(done))
	}
	res.FairBigRows = max(b.opts.JobRows/5, 20_000)
	var big bytes.Buffer
	for i := range res.FairBigRows {
		big.Write(lines[i%len(lines)])
	}
	b.log("small jobs: a %d-row job of a second key, then %d %d-row jobs while it runs", res.FairBigRows, m, fairSmallRows)
	req, err := http.NewRequestWithContext(ctx, "POST", b.apiURL+"/api/v1/jobs?model_version=v2.0.0", bytes.NewReader(big.Bytes()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.key2)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("fair share, big job: %w", err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var bigJob struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(rb, &bigJob) != nil {
		return nil, fmt.Errorf("fair share, big job answered %d: %s", resp.StatusCode, rb)
	}
	var finished []time.Time
	for i := range m {
		time.Sleep(50 * time.Millisecond)
		done, at, err := small(b.key)
		if err != nil {
			return nil, fmt.Errorf("fair share, job %d: %w", i, err)
		}
		res.FairLoadedMS = append(res.FairLoadedMS, ms(done))
		finished = append(finished, at)
	}
	st, _, err := waitJob(ctx, b.apiURL, b.key2, bigJob.ID, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if st.FinishedAt == nil {
		return nil, fmt.Errorf("fair share, big job %s ended %s", bigJob.ID, st.Status)
	}
	for _, at := range finished {
		if at.Before(*st.FinishedAt) {
			res.FairBigDoneBefore++
		}
	}
	b.log("small jobs: %d-row jobs p50 %.1f ms idle, %.1f ms while the big job ran (%d of %d finished before it)", fairSmallRows,
		quantileMS(res.FairIdleMS, 0.5), quantileMS(res.FairLoadedMS, 0.5), res.FairBigDoneBefore, m)
	return res, nil
}

// smallJobTableRows are the table's rows of the small-job measurement: each latency's p50 (and
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
	rows := []row{
		mk("succeeded", s.SucceededMS, targetSmallSucceededMS),
		mk("webhook received", s.WebhookMS, targetSmallWebhookMS),
	}
	if len(s.FairLoadedMS) > 0 {
		idle, loaded := quantileMS(s.FairIdleMS, 0.5), quantileMS(s.FairLoadedMS, 0.5)
		r := row{Group: "job", Measure: fmt.Sprintf("job: fair share, %d-row jobs of one key while another key's %s-row job runs, submit → succeeded, p50 (%d jobs)",
			fairSmallRows, itoa(int64(s.FairBigRows)), len(s.FairLoadedMS)),
			Value: loaded, Unit: "ms", P50MS: ptr(loaded),
			Note:        fmt.Sprintf("p90 %.1f ms; %d of them finished before the big job", quantileMS(s.FairLoadedMS, 0.9), s.FairBigDoneBefore),
			CeilingName: "the same jobs on an idle system (p50)", Ceiling: ptr(idle),
			Target: fmt.Sprintf("≤ %.0f×", targetFairRatio)}
		if idle > 0 {
			r.Ratio = ptr(loaded / idle)
			r.Met = ptr(loaded/idle <= targetFairRatio && s.FairBigDoneBefore == len(s.FairLoadedMS))
		}
		rows = append(rows, r)
	}
	return rows
}
