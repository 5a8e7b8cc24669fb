package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// predictRequest is the wire form of a PredictionInput. Pointers tell "absent" (or null)
// from an explicit value: an absent threshold is the default, an explicit 0 is refused.
type predictRequest struct {
	Features            []float64 `json:"features"`
	ModelVersion        *string   `json:"model_version"`
	ConfidenceThreshold *float64  `json:"confidence_threshold"`
	Preprocessing       *string   `json:"preprocessing"`
}

// input maps the request to a prediction.Input; the prediction service normalizes and
// checks it.
func (r predictRequest) input() prediction.Input {
	in := prediction.Input{
		Features:            r.Features,
		ConfidenceThreshold: prediction.DefaultThreshold,
	}
	if r.ModelVersion != nil {
		in.ModelVersion = *r.ModelVersion
	}
	if r.ConfidenceThreshold != nil {
		in.ConfidenceThreshold = *r.ConfidenceThreshold
	}
	if r.Preprocessing != nil {
		in.Preprocessing = *r.Preprocessing
	}
	return in
}

// meta describes who asked: the request id and the tenant, stored as the prediction's
// user id.
func meta(c echo.Context) prediction.Meta {
	ctx := c.Request().Context()
	m := prediction.Meta{RequestID: requestIDFrom(ctx)}
	if p, ok := principalFrom(ctx); ok {
		m.UserID = p.KeyID
	}
	return m
}

// handlePredict answers POST /api/v1/predict.
func handlePredict(p Predictor) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req predictRequest
		if err := decodeJSONBody(c, &req); err != nil {
			return err
		}
		out, err := p.Predict(c.Request().Context(), req.input(), meta(c))
		if err != nil {
			return err
		}
		out.Timestamp = out.Timestamp.UTC()
		return c.JSON(http.StatusOK, out)
	}
}

// batchRequest is the body of POST /api/v1/predict/batch.
type batchRequest struct {
	Samples  []predictRequest `json:"samples"`
	Parallel *bool            `json:"parallel"` // absent or null: true
}

// batchResponse is the answer of POST /api/v1/predict/batch.
type batchResponse struct {
	Predictions []prediction.Output `json:"predictions"`
	Total       int                 `json:"total"`
	Parallel    bool                `json:"parallel"`
}

// handlePredictBatch answers POST /api/v1/predict/batch: up to maxSamples inputs answered
// inline, in order.
func handlePredictBatch(p Predictor, maxSamples int) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req batchRequest
		if err := decodeJSONBody(c, &req); err != nil {
			return err
		}
		switch n := len(req.Samples); {
		case req.Samples == nil:
			return validate.Field("samples", "is required")
		case n == 0:
			return validate.Field("samples", "must hold at least 1 sample")
		case n > maxSamples:
			return validate.Field("samples", "must hold at most %d samples, got %d", maxSamples, n)
		}
		ins := make([]prediction.Input, len(req.Samples))
		for i, s := range req.Samples {
			ins[i] = s.input()
		}
		parallel := req.Parallel == nil || *req.Parallel
		outs, err := p.PredictBatch(c.Request().Context(), ins, parallel, meta(c))
		if err != nil {
			return err
		}
		for i := range outs {
			outs[i].Timestamp = outs[i].Timestamp.UTC()
		}
		if outs == nil {
			outs = []prediction.Output{}
		}
		return c.JSON(http.StatusOK, batchResponse{Predictions: outs, Total: len(outs), Parallel: parallel})
	}
}
