package oip_test

import (
	"context"
	"encoding/csv"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/prediction"
)

// setup returns a Service over the shipped models and the prediction service it calls.
func setup(t *testing.T) (*oip.Service, *prediction.Service) {
	t.Helper()
	reg := modelreg.New("../../models", nil, slog.New(slog.DiscardHandler))
	require.NoError(t, reg.Load(context.Background()))
	pred, err := prediction.NewService(prediction.ServiceConfig{Models: reg})
	require.NoError(t, err)
	svc, err := oip.NewService(oip.Config{Predictor: pred, Models: reg, MaxRows: 300})
	require.NoError(t, err)
	return svc, pred
}

// sonarRows reads the features of data/sonar.csv.
func sonarRows(t *testing.T) [][]float64 {
	t.Helper()
	f, err := os.Open("../../data/sonar.csv")
	require.NoError(t, err)
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var rows [][]float64
	for _, r := range recs {
		x := make([]float64, 60)
		for j := range x {
			x[j], err = strconv.ParseFloat(r[j], 64)
			require.NoError(t, err)
		}
		rows = append(rows, x)
	}
	require.Len(t, rows, 208)
	return rows
}

func flat(rows [][]float64) []float64 {
	var out []float64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	svc, _ := setup(t)
	md, err := svc.ModelMetadata(context.Background(), "sonar", "")
	require.NoError(t, err)
	require.Equal(t, "sonar", md.Name)
	require.Equal(t, []string{"v1.0.0", "v2.0.0"}, md.Versions)
	require.Equal(t, []oip.TensorMetadata{{Name: "features", Datatype: oip.FP64, Shape: []int64{-1, 60}}}, md.Inputs)
	require.Len(t, md.Outputs, 3)

	for _, tc := range []struct{ name, version string }{{"sonar", "v9.0.0"}, {"iris", ""}, {"sonar", "v1"}, {"iris", "v1.0.0"}} {
		_, err := svc.ModelMetadata(context.Background(), tc.name, tc.version)
		require.Equal(t, oip.KindNotFound, oip.KindOf(err), "%s %s: %v", tc.name, tc.version, err)
		ready, err := svc.ModelReady(context.Background(), tc.name, tc.version)
		require.False(t, ready)
		require.Equal(t, oip.KindNotFound, oip.KindOf(err))
	}
	ready, err := svc.ModelReady(context.Background(), "sonar", "v1.0.0")
	require.NoError(t, err)
	require.True(t, ready)
	require.True(t, svc.ServerReady(context.Background()))
}

// Every sonar row answered through Infer (FP64 and FP32) equals PredictBatch of the same
// features, bit for bit.
func TestInferEqualsPredictBatch(t *testing.T) {
	t.Parallel()
	svc, pred := setup(t)
	rows := sonarRows(t)
	for _, dt := range []string{oip.FP64, oip.FP32} {
		for _, version := range []string{"", "v1.0.0", "v2.0.0"} {
			ins := make([]prediction.Input, len(rows))
			for i, r := range rows {
				x := make([]float64, len(r))
				for j, v := range r {
					x[j] = v
					if dt == oip.FP32 {
						x[j] = float64(float32(v))
					}
				}
				ins[i] = prediction.Input{Features: x, ModelVersion: version, ConfidenceThreshold: 0.5}
			}
			want, err := pred.PredictBatch(context.Background(), ins, true, prediction.Meta{RequestID: "r"})
			require.NoError(t, err)
			req := &oip.InferRequest{ID: "abc", Inputs: []oip.InputTensor{{
				Name: "features", Datatype: dt, Shape: []int64{208, 60}, Data: flat(rows)}}}
			got, err := svc.Infer(context.Background(), prediction.Meta{RequestID: "r"}, "sonar", version, req)
			require.NoError(t, err)
			require.Equal(t, "abc", got.ID)
			require.Equal(t, "sonar", got.ModelName)
			require.Equal(t, want[0].ModelVersion, got.ModelVersion)
			require.Len(t, got.Outputs, 3)
			for i, w := range want {
				require.Equal(t, w.Prediction, got.Outputs[0].FP64[i], "%s %s row %d", dt, version, i)
				require.Equal(t, w.PredictionClass, got.Outputs[1].Bytes[i])
				require.Equal(t, w.Confidence, got.Outputs[2].FP64[i])
			}
		}
	}
}

func TestInferRefusesBadRequests(t *testing.T) {
	t.Parallel()
	svc, _ := setup(t)
	row := make([]float64, 60)
	good := func() *oip.InferRequest {
		return &oip.InferRequest{Inputs: []oip.InputTensor{{Name: "features", Datatype: oip.FP64, Shape: []int64{1, 60}, Data: append([]float64(nil), row...)}}}
	}
	tests := []struct {
		name   string
		mutate func(*oip.InferRequest)
		want   string
	}{
		{"no inputs", func(r *oip.InferRequest) { r.Inputs = nil }, "got none"},
		{"two inputs", func(r *oip.InferRequest) { r.Inputs = append(r.Inputs, r.Inputs[0]) }, "got 2"},
		{"wrong name", func(r *oip.InferRequest) { r.Inputs[0].Name = "x" }, `no input "x"`},
		{"INT64", func(r *oip.InferRequest) { r.Inputs[0].Datatype = oip.INT64 }, "not INT64"},
		{"unknown datatype", func(r *oip.InferRequest) { r.Inputs[0].Datatype = "FLOAT" }, "unknown datatype"},
		{"no shape", func(r *oip.InferRequest) { r.Inputs[0].Shape = nil }, "shape is required"},
		{"wrong width", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{2, 30} }, "[2, 30]"},
		{"short data", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{2, 60} }, "takes 120 elements, got 60"},
		{"huge N", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{1 << 40, 60} }, "rows for 60 elements"},
		{"negative", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{-1, 60} }, "negative"},
		{"zero rows", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{0, 60} }, "no row"},
		{"rank 3", func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{1, 1, 60} }, "[1, 1, 60]"},
		{"out of range", func(r *oip.InferRequest) { r.Inputs[0].Data[7] = 1e6 }, "inputs[0] row 0, column 7: must be within"},
		{"FP32 overflow", func(r *oip.InferRequest) { r.Inputs[0].Datatype = oip.FP32; r.Inputs[0].Data[3] = 1e300 }, "out of the range of FP32"},
		{"threshold", func(r *oip.InferRequest) { r.Parameters = oip.Parameters{"confidence_threshold": 2.0} }, "parameters.confidence_threshold"},
		{"threshold type", func(r *oip.InferRequest) { r.Parameters = oip.Parameters{"confidence_threshold": "x"} }, "must be a number"},
		{"preprocessing", func(r *oip.InferRequest) { r.Parameters = oip.Parameters{"preprocessing": "log"} }, "parameters.preprocessing"},
		{"unknown parameter", func(r *oip.InferRequest) { r.Parameters = oip.Parameters{"priority": 1.0} }, "unknown parameter"},
		{"binary output", func(r *oip.InferRequest) { r.Parameters = oip.Parameters{"binary_data_output": true} }, "binary tensor data is not supported"},
		{"binary output tensor", func(r *oip.InferRequest) {
			r.Outputs = []oip.RequestedOutput{{Name: "class", Parameters: oip.Parameters{"binary_data": true}}}
		}, "binary tensor data is not supported"},
		{"unknown output", func(r *oip.InferRequest) { r.Outputs = []oip.RequestedOutput{{Name: "logits"}} }, `unknown output "logits"`},
		{"output twice", func(r *oip.InferRequest) {
			r.Outputs = []oip.RequestedOutput{{Name: "class"}, {Name: "class"}}
		}, "twice"},
		{"too many rows", func(r *oip.InferRequest) {
			r.Inputs[0].Shape = []int64{301, 60}
			r.Inputs[0].Data = make([]float64, 301*60)
		}, "Prefer: respond-async"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := good()
			tc.mutate(req)
			_, err := svc.Infer(context.Background(), prediction.Meta{RequestID: "r"}, "sonar", "", req)
			require.Equal(t, oip.KindInvalid, oip.KindOf(err), "%v", err)
			require.Contains(t, oip.MessageOf(err), tc.want)
		})
	}
	_, err := svc.Infer(context.Background(), prediction.Meta{RequestID: "r"}, "sonar", "v1.0.0",
		&oip.InferRequest{Parameters: oip.Parameters{"preprocessing": "robust"}, Inputs: good().Inputs})
	require.Equal(t, oip.KindInvalid, oip.KindOf(err))
	require.Contains(t, oip.MessageOf(err), "parameters.preprocessing")
	_, err = svc.Infer(context.Background(), prediction.Meta{RequestID: "r"}, "iris", "", good())
	require.Equal(t, oip.KindNotFound, oip.KindOf(err))
}

// One row of shape [60], outputs selected, threshold and preprocessing as parameters.
func TestInferOneRowSelectedOutputs(t *testing.T) {
	t.Parallel()
	svc, pred := setup(t)
	x := sonarRows(t)[5]
	want, err := pred.Predict(context.Background(), prediction.Input{Features: x, ConfidenceThreshold: 0.9, Preprocessing: "robust"}, prediction.Meta{RequestID: "q"})
	require.NoError(t, err)
	got, err := svc.Infer(context.Background(), prediction.Meta{RequestID: "q"}, "sonar", "", &oip.InferRequest{
		Parameters: oip.Parameters{"preprocessing": "robust", "confidence_threshold": 0.9},
		Inputs:     []oip.InputTensor{{Name: "features", Datatype: oip.FP64, Shape: []int64{60}, Data: x}},
		Outputs:    []oip.RequestedOutput{{Name: "confidence", Parameters: oip.Parameters{"binary_data": false}}, {Name: "probability"}},
	})
	require.NoError(t, err)
	require.Equal(t, []oip.OutputTensor{
		{Name: "probability", Datatype: oip.FP64, Shape: []int64{1}, FP64: []float64{want.Prediction}},
		{Name: "confidence", Datatype: oip.FP64, Shape: []int64{1}, FP64: []float64{want.Confidence}},
	}, got.Outputs)
	require.Equal(t, "v2.0.0", got.ModelVersion)
}
