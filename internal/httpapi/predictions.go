package httpapi

import (
	"context"
	"errors"
	"github.com/predq/predq/internal/prediction"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/validate"
)

// PredictionReader reads persisted predictions (internal/prediction.Store).
type PredictionReader interface {
	List(ctx context.Context, f prediction.ListFilter) ([]prediction.Stored, string, error)
	// Get finds, within tenant, the prediction of an id or else the newest of a request id.
	Get(ctx context.Context, tenant, idOrRequestID string) (prediction.Stored, error)
}

// predictionList is the answer of GET /api/v1/predictions.
type predictionList struct {
	Predictions []prediction.Stored `json:"predictions"`
	NextCursor  string              `json:"next_cursor,omitempty"`
}

func queryTime(c echo.Context, name string) (time.Time, error) {
	s := c.QueryParam(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, validate.Field(name, "must be an RFC 3339 time like 2026-11-26T08:00:00Z")
	}
	return t, nil
}

// handleListPredictions answers GET /api/v1/predictions: the API key's persisted
// predictions, newest first, filtered by request id, model version and time range.
func (s *Server) handleListPredictions() echo.HandlerFunc {
	return func(c echo.Context) error {
		limit, lerr := queryLimit(c, prediction.DefaultListLimit, prediction.MaxListLimit)
		from, ferr := queryTime(c, "from")
		to, terr := queryTime(c, "to")
		v := &validate.Error{} // every bad parameter named at once
		for _, err := range []error{lerr, ferr, terr} {
			if fe, ok := errors.AsType[*validate.Error](err); ok {
				v.Merge("", fe)
			}
		}
		if err := v.Err(); err != nil {
			return err
		}
		items, next, err := s.deps.Predictions.List(c.Request().Context(), prediction.ListFilter{
			UserID: tenantOf(c), RequestID: c.QueryParam("request_id"), ModelVersion: c.QueryParam("model_version"), From: from, To: to,
			Limit: limit, Cursor: c.QueryParam("cursor"),
		})
		if errors.Is(err, prediction.ErrInvalidCursor) {
			return validate.Field("cursor", "is not a cursor of this listing")
		}
		if err != nil {
			return err
		}
		if items == nil {
			items = []prediction.Stored{}
		}
		return c.JSON(http.StatusOK, predictionList{Predictions: items, NextCursor: next})
	}
}

// handleGetPrediction answers GET /api/v1/predictions/{id}: by the server's id, else the
// newest by request id, among the predictions of the API key that asks (the store's query is
// scoped to it: another key's prediction is never found, nor shadows one of this key's).
func (s *Server) handleGetPrediction() echo.HandlerFunc {
	return func(c echo.Context) error {
		pr, err := s.deps.Predictions.Get(c.Request().Context(), tenantOf(c), c.Param("id"))
		if errors.Is(err, prediction.ErrNotFound) {
			return &problemError{status: http.StatusNotFound, slug: slugNotFound, title: "Prediction not found",
				detail: "No prediction of this API key has that id or request id. Predictions are stored within seconds of their answer."}
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, pr)
	}
}
