package httpapi

import (
	"context"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/validate"
)

// JobReplayer replays a finished job's stored inputs on another model version and compares
// the replay with the original (internal/job.Service). Errors as job.Service.Replay and
// job.Service.Compare document them.
type JobReplayer interface {
	Replay(ctx context.Context, owner job.Owner, id uuid.UUID, opts job.Options) (job.Job, error)
	Compare(ctx context.Context, owner job.Owner, id uuid.UUID) (job.Comparison, error)
}

// replayRequest is the body of POST /api/v1/jobs/{id}/replay. Absent options take the
// original job's (preprocessing, confidence threshold, priority).
type replayRequest struct {
	ModelVersion        string            `json:"model_version"`
	Preprocessing       string            `json:"preprocessing,omitempty"`
	ConfidenceThreshold *float64          `json:"confidence_threshold,omitempty"`
	WebhookURL          string            `json:"webhook_url,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	Priority            string            `json:"priority,omitempty"`
}

// handleReplayJob answers POST /api/v1/jobs/{id}/replay: 202 with the new job, Location its URL.
func handleReplayJob(r JobReplayer) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		var req replayRequest
		if err := decodeJSONBody(c, &req); err != nil {
			return err
		}
		opts := job.Options{ModelVersion: req.ModelVersion, Preprocessing: req.Preprocessing, WebhookURL: req.WebhookURL,
			Metadata: req.Metadata, Priority: req.Priority}
		if req.ConfidenceThreshold != nil {
			if *req.ConfidenceThreshold == 0 {
				return validate.Field("confidence_threshold", "must be in (0, 1], got 0")
			}
			opts.ConfidenceThreshold = *req.ConfidenceThreshold
		}
		j, err := r.Replay(c.Request().Context(), ownerOf(c), id, opts)
		if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/jobs/"+j.ID.String())
		return c.JSON(http.StatusAccepted, j)
	}
}

// handleCompareJob answers GET /api/v1/jobs/{id}/comparison (id: a replay).
func handleCompareJob(r JobReplayer) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := jobID(c)
		if err != nil {
			return err
		}
		cmp, err := r.Compare(c.Request().Context(), ownerOf(c), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, cmp)
	}
}
