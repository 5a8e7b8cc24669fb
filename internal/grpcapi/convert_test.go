package grpcapi

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/predq/predq/internal/oip"
	pb "github.com/predq/predq/internal/oip/inferencepb"
)

func le32(xs ...float32) []byte {
	b := make([]byte, 4*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func le64(xs ...float64) []byte {
	b := make([]byte, 8*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

func TestInferRequestReadsEachWireForm(t *testing.T) {
	t.Parallel()
	input := func(dt string, c *pb.InferTensorContents) []*pb.ModelInferRequest_InferInputTensor {
		return []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: dt, Shape: []int64{1, 3}, Contents: c}}
	}
	third := float32(1) / 3
	for name, tc := range map[string]struct {
		req     *pb.ModelInferRequest
		want    []float64
		wantRaw bool
	}{
		"fp64_contents": {req: &pb.ModelInferRequest{Inputs: input("FP64", &pb.InferTensorContents{Fp64Contents: []float64{0.1, -2, 3e-300}})},
			want: []float64{0.1, -2, 3e-300}},
		"fp32_contents widened exactly": {req: &pb.ModelInferRequest{Inputs: input("FP32", &pb.InferTensorContents{Fp32Contents: []float32{third, -0.5, 7}})},
			want: []float64{float64(third), -0.5, 7}},
		"raw FP64, little-endian": {req: &pb.ModelInferRequest{Inputs: input("FP64", nil), RawInputContents: [][]byte{le64(0.1, -2, math.SmallestNonzeroFloat64)}},
			want: []float64{0.1, -2, math.SmallestNonzeroFloat64}, wantRaw: true},
		"raw FP32, little-endian": {req: &pb.ModelInferRequest{Inputs: input("FP32", nil), RawInputContents: [][]byte{le32(third, -0.5, 7)}},
			want: []float64{float64(third), -0.5, 7}, wantRaw: true},
		"another datatype gets no elements (the core refuses it)": {req: &pb.ModelInferRequest{Inputs: input("INT32", &pb.InferTensorContents{IntContents: []int32{1, 2, 3}})},
			want: nil},
	} {
		t.Run(name, func(t *testing.T) {
			in, raw, err := inferRequest(tc.req)
			require.NoError(t, err)
			require.Equal(t, tc.wantRaw, raw)
			require.Len(t, in.Inputs, 1)
			if diff := cmp.Diff(tc.want, in.Inputs[0].Data); diff != "" {
				t.Errorf("elements (-want +got):\n%s", diff)
			}
			require.Equal(t, []int64{1, 3}, in.Inputs[0].Shape)
		})
	}
}

func TestInferRequestMapsParametersAndOutputs(t *testing.T) {
	t.Parallel()
	req := &pb.ModelInferRequest{Id: "r1",
		Parameters: map[string]*pb.InferParameter{
			"s": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "minmax"}},
			"d": {ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 0.7}},
			"i": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -3}},
			"u": {ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 9}},
			"b": {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}},
		},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "class"}, {Name: "confidence"}},
	}
	in, raw, err := inferRequest(req)
	require.NoError(t, err)
	require.False(t, raw)
	want := &oip.InferRequest{ID: "r1", Inputs: []oip.InputTensor{},
		Parameters: oip.Parameters{"s": "minmax", "d": 0.7, "i": int64(-3), "u": int64(9), "b": true},
		Outputs:    []oip.RequestedOutput{{Name: "class"}, {Name: "confidence"}}}
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

func TestInferRequestRefusesMalformedWireForms(t *testing.T) {
	t.Parallel()
	one := func(dt string, c *pb.InferTensorContents) []*pb.ModelInferRequest_InferInputTensor {
		return []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: dt, Shape: []int64{1, 2}, Contents: c}}
	}
	for name, tc := range map[string]struct {
		req  *pb.ModelInferRequest
		want string
	}{
		"raw entries ≠ inputs": {&pb.ModelInferRequest{Inputs: one("FP64", nil), RawInputContents: [][]byte{le64(1, 2), le64(1, 2)}},
			"raw_input_contents: 2 entries for 1 inputs"},
		"raw and contents": {&pb.ModelInferRequest{Inputs: one("FP64", &pb.InferTensorContents{Fp64Contents: []float64{1, 2}}), RawInputContents: [][]byte{le64(1, 2)}},
			"inputs[0].contents must not be set"},
		"raw FP64 length": {&pb.ModelInferRequest{Inputs: one("FP64", nil), RawInputContents: [][]byte{make([]byte, 15)}},
			"raw_input_contents[0]: 15 bytes is not a whole number of FP64 elements"},
		"raw FP32 length": {&pb.ModelInferRequest{Inputs: one("FP32", nil), RawInputContents: [][]byte{make([]byte, 7)}},
			"raw_input_contents[0]: 7 bytes is not a whole number of FP32 elements"},
		"FP32 in fp64_contents": {&pb.ModelInferRequest{Inputs: one("FP32", &pb.InferTensorContents{Fp64Contents: []float64{1, 2}})},
			"an FP32 tensor's elements go in fp32_contents, not fp64_contents"},
		"FP64 with bytes too": {&pb.ModelInferRequest{Inputs: one("FP64", &pb.InferTensorContents{Fp64Contents: []float64{1, 2}, BytesContents: [][]byte{{1}}})},
			"not bytes_contents"},
		"parameter without value": {&pb.ModelInferRequest{Parameters: map[string]*pb.InferParameter{"x": {}}},
			"parameters.x has no value"},
		"uint64 past int64": {&pb.ModelInferRequest{Parameters: map[string]*pb.InferParameter{"x": {ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: math.MaxUint64}}}},
			"parameters.x: 18446744073709551615 is out of range"},
		"input parameter without value": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Parameters: map[string]*pb.InferParameter{"p": nil}}}},
			"inputs[0].parameters.p has no value"},
		"output parameter without value": {&pb.ModelInferRequest{Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "class", Parameters: map[string]*pb.InferParameter{"p": {}}}}},
			"outputs[0].parameters.p has no value"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := inferRequest(tc.req)
			require.Error(t, err)
			require.Equal(t, oip.KindInvalid, oip.KindOf(err))
			require.Contains(t, oip.MessageOf(err), tc.want)
			st := status.Convert(statusOf(err))
			require.Equal(t, codes.InvalidArgument, st.Code())
			require.Equal(t, oip.MessageOf(err), st.Message())
		})
	}
}

func TestInferResponseInBothForms(t *testing.T) {
	t.Parallel()
	r := oip.Response("sonar", "v2.0.0", "id-1", oip.Outputs(), []oip.Row{
		{Probability: 0.75, Class: "positive", Confidence: 0.75},
		{Probability: 1.0 / 3, Class: "negative", Confidence: 2.0 / 3},
	})

	typed := inferResponsePB(&r, false)
	require.Equal(t, "sonar", typed.GetModelName())
	require.Equal(t, "v2.0.0", typed.GetModelVersion())
	require.Equal(t, "id-1", typed.GetId())
	require.Empty(t, typed.GetRawOutputContents())
	require.Len(t, typed.GetOutputs(), 3)
	require.Equal(t, []float64{0.75, 1.0 / 3}, typed.GetOutputs()[0].GetContents().GetFp64Contents())
	require.Equal(t, [][]byte{[]byte("positive"), []byte("negative")}, typed.GetOutputs()[1].GetContents().GetBytesContents())
	require.Equal(t, []float64{0.75, 2.0 / 3}, typed.GetOutputs()[2].GetContents().GetFp64Contents())

	raw := inferResponsePB(&r, true)
	require.Len(t, raw.GetRawOutputContents(), 3)
	for i, o := range raw.GetOutputs() {
		require.Nil(t, o.GetContents(), "output %d", i)
		require.Equal(t, typed.GetOutputs()[i].GetName(), o.GetName())
		require.Equal(t, typed.GetOutputs()[i].GetDatatype(), o.GetDatatype())
		require.Equal(t, []int64{2}, o.GetShape())
	}
	require.Equal(t, le64(0.75, 1.0/3), raw.GetRawOutputContents()[0])
	require.Equal(t, append([]byte{8, 0, 0, 0}, append([]byte("positive"), append([]byte{8, 0, 0, 0}, "negative"...)...)...), raw.GetRawOutputContents()[1])
	require.Equal(t, le64(0.75, 2.0/3), raw.GetRawOutputContents()[2])
}

func TestStatusOfEachKind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{oip.Invalid("bad %d", 1), codes.InvalidArgument, "bad 1"},
		{oip.NotFound("no model"), codes.NotFound, "no model"},
		{oip.Unavailable(nil, "later"), codes.Unavailable, "later"},
		{oip.Unauthenticated("who"), codes.Unauthenticated, "who"},
		{&oip.Error{Kind: oip.KindInternal, Message: "boom", Err: errSecret}, codes.Internal, "internal error"},
		{errSecret, codes.Internal, "internal error"},
	} {
		st := status.Convert(statusOf(tc.err))
		require.Equal(t, tc.code, st.Code(), tc.err)
		require.Equal(t, tc.msg, st.Message(), "an internal cause never reaches the client")
	}
}

var errSecret = errors.New("dial tcp 10.0.0.7:5432: secret detail")

func TestOpenMethods(t *testing.T) {
	t.Parallel()
	for m, open := range map[string]bool{
		"/inference.GRPCInferenceService/ServerLive":                     true,
		"/inference.GRPCInferenceService/ServerReady":                    true,
		"/grpc.health.v1.Health/Check":                                   true,
		"/grpc.health.v1.Health/Watch":                                   true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
		"/inference.GRPCInferenceService/ModelReady":                     false,
		"/inference.GRPCInferenceService/ServerMetadata":                 false,
		"/inference.GRPCInferenceService/ModelMetadata":                  false,
		"/inference.GRPCInferenceService/ModelInfer":                     false,
		"/inference.GRPCInferenceService/ServerLiveX":                    false,
		"/grpc.health.v1.HealthX/Check":                                  false,
	} {
		require.Equal(t, open, openMethod(m), m)
	}
}
