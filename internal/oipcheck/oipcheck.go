// Package oipcheck checks that a server speaks the Open Inference Protocol v2 over REST: any
// server (predq, Triton, KServe, MLServer), given its URL and a model it serves. Run calls
// every path of the protocol, checks the required members of each answer, the echo of the
// request id, flat and nested tensor data, and that wrong datatypes, shapes, data lengths, a
// missing input, malformed JSON and unknown models and versions get the protocol's error
// (an HTTP 4xx with {"error": "..."}), and prints a table of the checks.
//
// It builds its inference requests from the model's own metadata (the input's name,
// datatype and shape, -1 dimensions taken as 1, every element zero), so it needs to know
// nothing of the model beforehand.
package oipcheck

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// Config says what to check.
type Config struct {
	// URL is the server's base URL (http://localhost:8080); the protocol's paths start
	// with /v2 under it. Required.
	URL string
	// APIKey, when set, is sent as Authorization: Bearer <key>.
	APIKey string
	// Model is the name of a model the server serves (default "sonar").
	Model string
	// Version is a version of Model to check the versioned paths with (default: the
	// first of the versions the model's metadata lists; without any, those checks are not
	// applicable).
	Version string
	// Client makes the requests (default: a client with Timeout).
	Client *http.Client
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
}

// Status is the outcome of one check.
type Status string

// Outcomes.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	NA   Status = "n/a" // not applicable to this server or model
)

// Check is one check and its outcome.
type Check struct {
	Name   string
	Status Status
	Detail string
}

// Report is the outcome of every check, in the order they ran.
type Report struct {
	Checks []Check
}

// Count returns how many checks had the status.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// OK reports whether no check failed. A command exits non-zero when it is false.
func (r Report) OK() bool { return r.Count(Fail) == 0 }

// Run checks the server of cfg and writes the table of checks to w (nil: nowhere). The
// error is for what stops the checks from running at all (an invalid configuration); a
// failed check, even one that could not reach the server, is a Fail in the report.
func Run(ctx context.Context, cfg Config, w io.Writer) (Report, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Report{}, fmt.Errorf("oipcheck: URL must be an http(s) URL with a host, got %q", cfg.URL)
	}
	cfg.URL = strings.TrimRight(u.String(), "/")
	cfg.Model = cmp.Or(cfg.Model, "sonar")
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	c := &checker{cfg: cfg, ctx: ctx}
	c.run()
	if w != nil {
		if err := c.report.write(w); err != nil {
			return c.report, err
		}
	}
	return c.report, nil
}

// write prints the table and a summary line.
func (r Report) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Status, c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d passed, %d failed, %d not applicable\n", r.Count(Pass), r.Count(Fail), r.Count(NA))
	return err
}

type checker struct {
	cfg    Config
	ctx    context.Context
	report Report
}

func (c *checker) add(name string, s Status, format string, args ...any) {
	c.report.Checks = append(c.report.Checks, Check{Name: name, Status: s, Detail: fmt.Sprintf(format, args...)})
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (a answer) String() string {
	if a.err != nil {
		return a.err.Error()
	}
	b := a.body
	if len(b) > 200 {
		b = append(b[:200:200], "…"...)
	}
	return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(b))
}

func (c *checker) do(method, path string, body []byte) answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.ctx, method, c.cfg.URL+path, rd)
	if err != nil {
		return answer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// object decodes a JSON object answer.
func (a answer) object() (map[string]any, error) {
	if a.err != nil {
		return nil, a.err
	}
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %s", a)
	}
	return m, nil
}

// expectOK checks a 200 with a JSON object, and returns it.
func (c *checker) expectOK(name string, a answer) (map[string]any, bool) {
	if a.err != nil || a.status != http.StatusOK {
		c.add(name, Fail, "want 200, got %s", a)
		return nil, false
	}
	m, err := a.object()
	if err != nil {
		c.add(name, Fail, "%v", err)
		return nil, false
	}
	return m, true
}

// expectError checks a protocol error: a status in want and a body {"error": string}.
func (c *checker) expectError(name string, a answer, want ...int) {
	if a.err != nil {
		c.add(name, Fail, "%v", a.err)
		return
	}
	okStatus := false
	for _, s := range want {
		okStatus = okStatus || a.status == s
	}
	if !okStatus {
		c.add(name, Fail, "want %s with {\"error\"}, got %s", statuses(want), a)
		return
	}
	m, err := a.object()
	if err != nil {
		c.add(name, Fail, "the body is not the protocol's error object: %v", err)
		return
	}
	if msg, ok := m["error"].(string); !ok || msg == "" {
		c.add(name, Fail, "the body has no \"error\" string: %s", a)
		return
	}
	c.add(name, Pass, "%d %s", a.status, truncate(m["error"].(string), 80))
}

func statuses(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, " or ")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// checkHealth checks a health path: 200, and when it has a JSON body, member true.
func (c *checker) checkHealth(name, path string, members ...string) {
	a := c.do(http.MethodGet, path, nil)
	if a.err != nil || a.status != http.StatusOK {
		c.add(name, Fail, "want 200, got %s", a)
		return
	}
	c.add(name, Pass, "200")
	if len(bytes.TrimSpace(a.body)) == 0 {
		c.add(name+" body", NA, "no body (the status is the answer)")
		return
	}
	m, err := a.object()
	if err != nil {
		c.add(name+" body", Fail, "%v", err)
		return
	}
	for _, k := range members {
		if v, ok := m[k]; ok {
			if v != true {
				c.add(name+" body", Fail, "%q is %v, want true", k, v)
			} else {
				c.add(name+" body", Pass, "%q: true", k)
			}
			return
		}
	}
	c.add(name+" body", Fail, "none of %v in %s", members, a)
}

// tensorMeta is a $metadata_tensor.
type tensorMeta struct {
	Name     string
	Datatype string
	Shape    []int64
}

func tensorsOf(v any) ([]tensorMeta, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, errors.New("not an array")
	}
	var out []tensorMeta
	for i, e := range arr {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("[%d] is not an object", i)
		}
		var t tensorMeta
		if t.Name, ok = m["name"].(string); !ok {
			return nil, fmt.Errorf("[%d].name is not a string", i)
		}
		if t.Datatype, ok = m["datatype"].(string); !ok {
			return nil, fmt.Errorf("[%d].datatype is not a string", i)
		}
		shape, ok := m["shape"].([]any)
		if !ok {
			return nil, fmt.Errorf("[%d].shape is not an array", i)
		}
		for _, d := range shape {
			f, ok := d.(float64)
			if !ok || f != float64(int64(f)) || f < -1 {
				return nil, fmt.Errorf("[%d].shape holds %v", i, d)
			}
			t.Shape = append(t.Shape, int64(f))
		}
		out = append(out, t)
	}
	return out, nil
}

func (c *checker) modelPath(version string) string {
	p := "/v2/models/" + url.PathEscape(c.cfg.Model)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

func (c *checker) run() {
	c.checkHealth("health/live", "/v2/health/live", "live")
	c.checkHealth("health/ready", "/v2/health/ready", "ready", "live")

	if m, ok := c.expectOK("server metadata", c.do(http.MethodGet, "/v2", nil)); ok {
		_, name := m["name"].(string)
		_, version := m["version"].(string)
		_, ext := m["extensions"].([]any)
		if name && version && ext {
			c.add("server metadata", Pass, "name %q, version %q", m["name"], m["version"])
		} else {
			c.add("server metadata", Fail, "want name, version (strings) and extensions (array): %v", m)
		}
	}

	var inputs []tensorMeta
	var versions []string
	if m, ok := c.expectOK("model metadata", c.do(http.MethodGet, c.modelPath(""), nil)); ok {
		in, inErr := tensorsOf(m["inputs"])
		_, outErr := tensorsOf(m["outputs"])
		_, platform := m["platform"].(string)
		switch {
		case m["name"] != c.cfg.Model:
			c.add("model metadata", Fail, "name %v, want %q", m["name"], c.cfg.Model)
		case !platform:
			c.add("model metadata", Fail, "platform is not a string")
		case inErr != nil || outErr != nil:
			c.add("model metadata", Fail, "inputs/outputs: %v", errors.Join(inErr, outErr))
		case len(in) == 0:
			c.add("model metadata", Fail, "no inputs")
		default:
			inputs = in
			c.add("model metadata", Pass, "%d inputs, platform %q", len(in), m["platform"])
		}
		if vs, ok := m["versions"].([]any); ok {
			for _, v := range vs {
				if s, ok := v.(string); ok {
					versions = append(versions, s)
				}
			}
		}
	}
	version := c.cfg.Version
	if version == "" && len(versions) > 0 {
		version = versions[0]
	}
	if version == "" {
		c.add("model metadata (versioned)", NA, "the model lists no version")
	} else if m, ok := c.expectOK("model metadata (versioned)", c.do(http.MethodGet, c.modelPath(version), nil)); ok {
		if m["name"] == c.cfg.Model {
			c.add("model metadata (versioned)", Pass, "version %s", version)
		} else {
			c.add("model metadata (versioned)", Fail, "name %v, want %q", m["name"], c.cfg.Model)
		}
	}
	c.checkReady("model ready", c.modelPath(""))
	if version == "" {
		c.add("model ready (versioned)", NA, "the model lists no version")
	} else {
		c.checkReady("model ready (versioned)", c.modelPath(version))
	}

	c.expectError("unknown model: metadata", c.do(http.MethodGet, "/v2/models/oipcheck-no-such-model", nil), 400, 404)
	c.expectError("unknown model: infer", c.do(http.MethodPost, "/v2/models/oipcheck-no-such-model/infer", []byte(`{"inputs":[]}`)), 400, 404)
	c.expectError("unknown version: metadata", c.do(http.MethodGet, c.modelPath("oipcheck-no-such-version"), nil), 400, 404)

	if len(inputs) == 0 {
		for _, n := range []string{"infer flat", "infer nested", "infer (versioned)", "infer outputs selected",
			"wrong datatype", "wrong shape", "wrong data length", "missing inputs", "malformed JSON"} {
			c.add(n, NA, "no input metadata to build a request from")
		}
		return
	}
	c.checkInfer(inputs, version)
}

func (c *checker) checkReady(name, path string) {
	a := c.do(http.MethodGet, path+"/ready", nil)
	if a.err != nil || a.status != http.StatusOK {
		c.add(name, Fail, "want 200, got %s", a)
		return
	}
	if len(bytes.TrimSpace(a.body)) == 0 {
		c.add(name, Pass, "200 (no body)")
		return
	}
	m, err := a.object()
	switch {
	case err != nil:
		c.add(name, Fail, "%v", err)
	case m["ready"] != nil && m["ready"] != true:
		c.add(name, Fail, "ready is %v", m["ready"])
	default:
		c.add(name, Pass, "200 %s", bytes.TrimSpace(a.body))
	}
}
