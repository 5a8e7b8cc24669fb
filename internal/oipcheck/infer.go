package oipcheck

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
)

// request builds an inference request for the inputs: -1 dimensions are 1, every element
// zero (false, "" for BOOL and BYTES), flat or nested per input.
func request(id string, inputs []tensorMeta, nested bool) map[string]any {
	var ins []any
	for _, in := range inputs {
		shape := make([]int64, len(in.Shape))
		n := int64(1)
		for i, d := range in.Shape {
			shape[i] = max(d, 1)
			n *= shape[i]
		}
		var zero any = 0
		switch in.Datatype {
		case "BOOL":
			zero = false
		case "BYTES":
			zero = ""
		}
		flat := make([]any, n)
		for i := range flat {
			flat[i] = zero
		}
		var data any = flat
		if nested && len(shape) > 1 {
			data = nest(flat, shape)
		}
		ins = append(ins, map[string]any{"name": in.Name, "datatype": in.Datatype, "shape": shape, "data": data})
	}
	req := map[string]any{"inputs": ins}
	if id != "" {
		req["id"] = id
	}
	return req
}

// nest turns flat row-major elements into nested arrays of shape.
func nest(flat []any, shape []int64) any {
	if len(shape) == 1 {
		return flat
	}
	step := len(flat) / int(shape[0])
	out := make([]any, shape[0])
	for i := range out {
		out[i] = nest(flat[i*step:(i+1)*step], shape[1:])
	}
	return out
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of plain values always encode
	}
	return b
}

// outputOf is a $response_output as the checks read it.
type outputOf struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

type responseOf struct {
	ModelName    *string    `json:"model_name"`
	ModelVersion *string    `json:"model_version"`
	ID           *string    `json:"id"`
	Outputs      []outputOf `json:"outputs"`
}

// checkResponse checks an inference response's required members and returns it.
func (c *checker) checkResponse(name string, a answer, id, version string) (responseOf, bool) {
	if a.err != nil || a.status != http.StatusOK {
		c.add(name, Fail, "want 200, got %s", a)
		return responseOf{}, false
	}
	var r responseOf
	if err := json.Unmarshal(a.body, &r); err != nil {
		c.add(name, Fail, "not an inference response: %v", err)
		return r, false
	}
	switch {
	case r.ModelName == nil || *r.ModelName != c.cfg.Model:
		c.add(name, Fail, "model_name %v, want %q", deref(r.ModelName), c.cfg.Model)
		return r, false
	case id != "" && (r.ID == nil || *r.ID != id):
		c.add(name, Fail, "id %v, want %q echoed", deref(r.ID), id)
		return r, false
	case version != "" && r.ModelVersion != nil && *r.ModelVersion != version:
		c.add(name, Fail, "model_version %q, want %q", *r.ModelVersion, version)
		return r, false
	case len(r.Outputs) == 0:
		c.add(name, Fail, "no outputs")
		return r, false
	}
	for _, o := range r.Outputs {
		var data []any
		if err := json.Unmarshal(o.Data, &data); err != nil || o.Name == "" || o.Datatype == "" || o.Shape == nil {
			c.add(name, Fail, "output %q lacks name, datatype, shape or data", o.Name)
			return r, false
		}
		n := int64(1)
		for _, d := range o.Shape {
			n *= d
		}
		if got := countLeaves(data); int64(got) != n {
			c.add(name, Fail, "output %q: shape %v takes %d elements, data holds %d", o.Name, o.Shape, n, got)
			return r, false
		}
	}
	detail := fmt.Sprintf("%d outputs", len(r.Outputs))
	if id != "" {
		detail += ", id echoed"
	}
	c.add(name, Pass, "%s", detail)
	return r, true
}

func countLeaves(v []any) int {
	n := 0
	for _, e := range v {
		if a, ok := e.([]any); ok {
			n += countLeaves(a)
		} else {
			n++
		}
	}
	return n
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// sameOutputs compares the data of two responses' outputs, flattened.
func sameOutputs(a, b responseOf) bool {
	if len(a.Outputs) != len(b.Outputs) {
		return false
	}
	for i := range a.Outputs {
		var x, y []any
		_ = json.Unmarshal(a.Outputs[i].Data, &x)
		_ = json.Unmarshal(b.Outputs[i].Data, &y)
		if a.Outputs[i].Name != b.Outputs[i].Name || !reflect.DeepEqual(flatten(x), flatten(y)) {
			return false
		}
	}
	return true
}

func flatten(v []any) []any {
	var out []any
	for _, e := range v {
		if a, ok := e.([]any); ok {
			out = append(out, flatten(a)...)
		} else {
			out = append(out, e)
		}
	}
	return out
}

func (c *checker) checkInfer(inputs []tensorMeta, version string) {
	path := c.modelPath("") + "/infer"
	flat, ok := c.checkResponse("infer flat", c.do(http.MethodPost, path, encode(request("oipcheck-1", inputs, false))), "oipcheck-1", "")

	nestable := false
	for _, in := range inputs {
		nestable = nestable || len(in.Shape) > 1
	}
	if !nestable {
		c.add("infer nested", NA, "every input has rank 1")
	} else if nested, okN := c.checkResponse("infer nested", c.do(http.MethodPost, path, encode(request("oipcheck-2", inputs, true))), "oipcheck-2", ""); okN && ok {
		if !sameOutputs(flat, nested) {
			c.add("infer nested = flat", Fail, "the nested request's outputs differ from the flat one's")
		} else {
			c.add("infer nested = flat", Pass, "same outputs")
		}
	}

	if version == "" {
		c.add("infer (versioned)", NA, "the model lists no version")
	} else {
		c.checkResponse("infer (versioned)", c.do(http.MethodPost, c.modelPath(version)+"/infer", encode(request("", inputs, false))), "", version)
	}

	if !ok {
		c.add("infer outputs selected", NA, "no output names: the flat infer failed")
	} else {
		want := flat.Outputs[0].Name
		req := request("", inputs, false)
		req["outputs"] = []any{map[string]any{"name": want}}
		if r, okS := c.checkResponse("infer outputs selected", c.do(http.MethodPost, path, encode(req)), "", ""); okS {
			if len(r.Outputs) != 1 || r.Outputs[0].Name != want {
				c.add("infer outputs selected", Fail, "asked for %q only, got %d outputs", want, len(r.Outputs))
			}
		}
	}

	// Bad input: the protocol's error, 400.
	first := inputs[0]
	wrongType := "BOOL"
	if first.Datatype == "BOOL" {
		wrongType = "BYTES"
	}
	bad := request("", inputs, false)
	in0 := bad["inputs"].([]any)[0].(map[string]any)
	in0["datatype"] = wrongType
	data := in0["data"].([]any)
	typed := make([]any, len(data))
	for i := range typed {
		typed[i] = map[string]any{"BOOL": true, "BYTES": "x"}[wrongType]
	}
	in0["data"] = typed
	c.expectError("wrong datatype", c.do(http.MethodPost, path, encode(bad)), 400)

	bad = request("", inputs, false)
	in0 = bad["inputs"].([]any)[0].(map[string]any)
	shape := in0["shape"].([]int64)
	wrong := append([]int64(nil), shape...)
	wrong[len(wrong)-1]++
	in0["shape"] = wrong
	n := int64(1)
	for _, d := range wrong {
		n *= d
	}
	in0["data"] = make([]int, n)
	c.expectError("wrong shape", c.do(http.MethodPost, path, encode(bad)), 400)

	bad = request("", inputs, false)
	in0 = bad["inputs"].([]any)[0].(map[string]any)
	in0["data"] = in0["data"].([]any)[1:]
	c.expectError("wrong data length", c.do(http.MethodPost, path, encode(bad)), 400)

	c.expectError("missing inputs", c.do(http.MethodPost, path, []byte(`{"id":"oipcheck"}`)), 400)
	c.expectError("malformed JSON", c.do(http.MethodPost, path, []byte(`{"inputs": [`)), 400)
}
