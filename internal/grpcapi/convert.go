package grpcapi

import (
	"encoding/binary"
	"math"
	"strconv"

	"github.com/predq/predq/internal/oip"
	pb "github.com/predq/predq/internal/oip/inferencepb"
)

// inferRequest maps a ModelInferRequest to the core's request. The elements of an FP32 or
// FP64 input come from its typed contents (fp32_contents, fp64_contents) or, when the
// request has raw_input_contents, from its raw bytes: the flattened, row-major, little-endian
// elements without padding, as the protocol says. raw reports that the request used raw
// inputs, so that the answer uses raw outputs. Only the wire form is checked here; the
// core checks the tensor itself (name, datatype, shape against its elements, values).
func inferRequest(req *pb.ModelInferRequest) (in *oip.InferRequest, raw bool, err error) {
	in = &oip.InferRequest{ID: req.GetId()}
	if in.Parameters, err = parameters(req.GetParameters(), "parameters"); err != nil {
		return nil, false, err
	}
	raws := req.GetRawInputContents()
	raw = len(raws) > 0
	inputs := req.GetInputs()
	if raw && len(raws) != len(inputs) {
		return nil, false, oip.Invalid("raw_input_contents: %d entries for %d inputs (one per input, in the order of inputs)", len(raws), len(inputs))
	}
	in.Inputs = make([]oip.InputTensor, len(inputs))
	for i, t := range inputs {
		it := oip.InputTensor{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: t.GetShape()}
		if it.Parameters, err = parameters(t.GetParameters(), "inputs["+strconv.Itoa(i)+"].parameters"); err != nil {
			return nil, false, err
		}
		if raw {
			if t.GetContents() != nil {
				return nil, false, oip.Invalid("inputs[%d].contents must not be set when the request has raw_input_contents", i)
			}
			it.Data, err = rawElements(raws[i], it.Datatype, i)
		} else {
			it.Data, err = typedElements(t.GetContents(), it.Datatype, i)
		}
		if err != nil {
			return nil, false, err
		}
		in.Inputs[i] = it
	}
	for i, o := range req.GetOutputs() {
		ro := oip.RequestedOutput{Name: o.GetName()}
		if ro.Parameters, err = parameters(o.GetParameters(), "outputs["+strconv.Itoa(i)+"].parameters"); err != nil {
			return nil, false, err
		}
		in.Outputs = append(in.Outputs, ro)
	}
	return in, raw, nil
}

// typedElements reads an input's elements from its typed contents: fp32_contents for FP32,
// fp64_contents for FP64, and no other field. An input of another datatype is given no
// elements: the core refuses its datatype.
func typedElements(c *pb.InferTensorContents, datatype string, i int) ([]float64, error) {
	if c == nil {
		return nil, nil
	}
	var want string
	var data []float64
	switch datatype {
	case oip.FP32:
		want = "fp32_contents"
		data = make([]float64, len(c.GetFp32Contents()))
		for j, x := range c.GetFp32Contents() {
			data[j] = float64(x)
		}
	case oip.FP64:
		want = "fp64_contents"
		data = c.GetFp64Contents()
	default:
		return nil, nil
	}
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.GetBoolContents())}, {"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())}, {"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())}, {"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())}, {"bytes_contents", len(c.GetBytesContents())},
	} {
		if f.n > 0 && f.name != want {
			return nil, oip.Invalid("inputs[%d].contents: an %s tensor's elements go in %s, not %s", i, datatype, want, f.name)
		}
	}
	return data, nil
}

// rawElements reads an input's elements from its raw bytes: little-endian IEEE 754 binary32
// for FP32, binary64 for FP64. An input of another datatype is given no elements: the core
// refuses its datatype.
func rawElements(b []byte, datatype string, i int) ([]float64, error) {
	switch datatype {
	case oip.FP32:
		if len(b)%4 != 0 {
			return nil, oip.Invalid("raw_input_contents[%d]: %d bytes is not a whole number of FP32 elements (4 bytes each)", i, len(b))
		}
		data := make([]float64, len(b)/4)
		for j := range data {
			data[j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:])))
		}
		return data, nil
	case oip.FP64:
		if len(b)%8 != 0 {
			return nil, oip.Invalid("raw_input_contents[%d]: %d bytes is not a whole number of FP64 elements (8 bytes each)", i, len(b))
		}
		data := make([]float64, len(b)/8)
		for j := range data {
			data[j] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*j:]))
		}
		return data, nil
	}
	return nil, nil
}

// parameters maps the protocol's parameters; where names the field in an error. A uint64
// that fits becomes an int64, as the core reads integers; a parameter with no value set is
// refused.
func parameters(m map[string]*pb.InferParameter, where string) (oip.Parameters, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(oip.Parameters, len(m))
	for k, p := range m {
		switch v := p.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *pb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *pb.InferParameter_StringParam:
			out[k] = v.StringParam
		case *pb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		case *pb.InferParameter_Uint64Param:
			if v.Uint64Param > math.MaxInt64 {
				return nil, oip.Invalid("%s.%s: %d is out of range", where, truncate(k, 64), v.Uint64Param)
			}
			out[k] = int64(v.Uint64Param)
		default:
			return nil, oip.Invalid("%s.%s has no value", where, truncate(k, 64))
		}
	}
	return out, nil
}

// parametersPB maps the core's parameters to the protocol's (bool, int64, float64 and
// string values; no other kind is made by the core).
func parametersPB(p oip.Parameters) map[string]*pb.InferParameter {
	if len(p) == 0 {
		return nil
	}
	out := make(map[string]*pb.InferParameter, len(p))
	for k, v := range p {
		switch v := v.(type) {
		case bool:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: v}}
		case int64:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: v}}
		case float64:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: v}}
		case string:
			out[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: v}}
		}
	}
	return out
}

// inferResponsePB maps the core's answer: each output's elements in its typed contents
// (fp64_contents, bytes_contents), or, when raw, in raw_output_contents in the order of the
// outputs: FP64 as little-endian binary64, BYTES as each element's length (4 bytes,
// little-endian) followed by its bytes, the serialization Triton and KServe clients read.
func inferResponsePB(r *oip.InferResponse, raw bool) *pb.ModelInferResponse {
	resp := &pb.ModelInferResponse{
		ModelName: r.ModelName, ModelVersion: r.ModelVersion, Id: r.ID,
		Parameters: parametersPB(r.Parameters),
		Outputs:    make([]*pb.ModelInferResponse_InferOutputTensor, len(r.Outputs)),
	}
	if raw {
		resp.RawOutputContents = make([][]byte, len(r.Outputs))
	}
	for i, o := range r.Outputs {
		t := &pb.ModelInferResponse_InferOutputTensor{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape,
			Parameters: parametersPB(o.Parameters)}
		switch {
		case raw && o.Datatype == oip.BYTES:
			resp.RawOutputContents[i] = rawBytes(o.Bytes)
		case raw:
			b := make([]byte, 8*len(o.FP64))
			for j, x := range o.FP64 {
				binary.LittleEndian.PutUint64(b[8*j:], math.Float64bits(x))
			}
			resp.RawOutputContents[i] = b
		case o.Datatype == oip.BYTES:
			bs := make([][]byte, len(o.Bytes))
			for j, s := range o.Bytes {
				bs[j] = []byte(s)
			}
			t.Contents = &pb.InferTensorContents{BytesContents: bs}
		default:
			t.Contents = &pb.InferTensorContents{Fp64Contents: o.FP64}
		}
		resp.Outputs[i] = t
	}
	return resp
}

// rawBytes serializes BYTES elements: each one's length as 4 little-endian bytes, then it.
func rawBytes(elems []string) []byte {
	n := 0
	for _, s := range elems {
		n += 4 + len(s)
	}
	b := make([]byte, 0, n)
	for _, s := range elems {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// modelMetadataPB maps the core's model metadata.
func modelMetadataPB(m oip.ModelMetadata) *pb.ModelMetadataResponse {
	tensors := func(ts []oip.TensorMetadata) []*pb.ModelMetadataResponse_TensorMetadata {
		out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
		}
		return out
	}
	return &pb.ModelMetadataResponse{Name: m.Name, Versions: m.Versions, Platform: m.Platform,
		Inputs: tensors(m.Inputs), Outputs: tensors(m.Outputs)}
}

// truncate shortens what a client sent before it is quoted in an error.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
