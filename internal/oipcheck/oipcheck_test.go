package oipcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// toyServer is a small third-party OIP server: model "toy", no versions, one input "x"
// (FP32, shape [-1, 2]), one output "y" = x0 + x1. Its faults are switched on by the flags.
type toyServer struct {
	noEcho      bool // does not echo the request id
	problemJSON bool // errors as problem+json instead of {"error"}
	acceptsAny  bool // does not check the datatype
}

func (s toyServer) fail(w http.ResponseWriter, status int, msg string) {
	if s.problemJSON {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"title": msg, "status": status})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func flatNumbers(v any) ([]float64, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	var out []float64
	for _, e := range arr {
		switch x := e.(type) {
		case float64:
			out = append(out, x)
		case []any:
			inner, ok := flatNumbers(x)
			if !ok {
				return nil, false
			}
			out = append(out, inner...)
		default:
			return nil, false
		}
	}
	return out, true
}

func (s toyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ok := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.URL.Path == "/v2/health/live" || r.URL.Path == "/v2/health/ready":
		w.WriteHeader(http.StatusOK) // no body: the status is the answer
	case r.URL.Path == "/v2":
		ok(map[string]any{"name": "toy", "version": "1", "extensions": []string{}})
	case r.URL.Path == "/v2/models/toy":
		ok(map[string]any{"name": "toy", "platform": "toy_go",
			"inputs":  []any{map[string]any{"name": "x", "datatype": "FP32", "shape": []int{-1, 2}}},
			"outputs": []any{map[string]any{"name": "y", "datatype": "FP32", "shape": []int{-1}}}})
	case r.URL.Path == "/v2/models/toy/ready":
		ok(map[string]any{"name": "toy", "ready": true})
	case r.URL.Path == "/v2/models/toy/infer" && r.Method == http.MethodPost:
		var req struct {
			ID     string `json:"id"`
			Inputs []struct {
				Name     string  `json:"name"`
				Datatype string  `json:"datatype"`
				Shape    []int64 `json:"shape"`
				Data     any     `json:"data"`
			} `json:"inputs"`
			Outputs []struct {
				Name string `json:"name"`
			} `json:"outputs"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			s.fail(w, 400, "bad JSON")
			return
		}
		if len(req.Inputs) != 1 {
			s.fail(w, 400, "one input")
			return
		}
		in := req.Inputs[0]
		if in.Datatype != "FP32" && !s.acceptsAny {
			s.fail(w, 400, "FP32 only")
			return
		}
		if len(in.Shape) != 2 || in.Shape[1] != 2 {
			s.fail(w, 400, "shape [n, 2]")
			return
		}
		x, good := flatNumbers(in.Data)
		if !good && s.acceptsAny {
			x, good = make([]float64, in.Shape[0]*2), true
		}
		if !good || int64(len(x)) != in.Shape[0]*2 {
			s.fail(w, 400, "data")
			return
		}
		y := make([]float64, in.Shape[0])
		for i := range y {
			y[i] = x[2*i] + x[2*i+1]
		}
		resp := map[string]any{"model_name": "toy", "outputs": []any{map[string]any{"name": "y", "datatype": "FP32", "shape": []int64{in.Shape[0]}, "data": y}}}
		if req.ID != "" && !s.noEcho {
			resp["id"] = req.ID
		}
		ok(resp)
	case strings.HasPrefix(r.URL.Path, "/v2/models/"):
		s.fail(w, 404, "no such model")
	default:
		s.fail(w, 404, "not found")
	}
}

func statusOf(rep Report, name string) Status {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Status
		}
	}
	return ""
}

func TestRunAgainstAConformingServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(toyServer{})
	defer srv.Close()
	var out bytes.Buffer
	rep, err := Run(context.Background(), Config{URL: srv.URL + "/", Model: "toy"}, &out)
	require.NoError(t, err)
	require.True(t, rep.OK(), out.String())
	require.Equal(t, NA, statusOf(rep, "infer (versioned)"), out.String())
	require.Equal(t, NA, statusOf(rep, "health/live body"), out.String())
	require.Equal(t, Pass, statusOf(rep, "infer nested = flat"), out.String())
	require.Contains(t, out.String(), "CHECK")
	require.Contains(t, out.String(), "0 failed")
}

func TestRunFindsTheFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		server toyServer
		fails  []string
	}{
		{"no id echo", toyServer{noEcho: true}, []string{"infer flat", "infer nested"}},
		{"problem+json errors", toyServer{problemJSON: true}, []string{"unknown model: metadata", "wrong shape", "malformed JSON"}},
		{"accepts any datatype", toyServer{acceptsAny: true}, []string{"wrong datatype"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.server)
			defer srv.Close()
			var out bytes.Buffer
			rep, err := Run(context.Background(), Config{URL: srv.URL, Model: "toy"}, &out)
			require.NoError(t, err)
			require.False(t, rep.OK())
			for _, name := range tc.fails {
				require.Equal(t, Fail, statusOf(rep, name), "%s\n%s", name, out.String())
			}
		})
	}
}

func TestRunRefusesABadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		_, err := Run(context.Background(), Config{URL: u}, nil)
		require.Error(t, err, u)
	}
	// An unreachable server is a report of failures, not an error.
	rep, err := Run(context.Background(), Config{URL: "http://127.0.0.1:1"}, nil)
	require.NoError(t, err)
	require.False(t, rep.OK())
}
