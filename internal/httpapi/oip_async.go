package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/oip"
)

// The asynchronous mode of /v2 infer: with "Prefer: respond-async" (RFC 7240) an inference
// request becomes a batch job of the job feature (its rows stored in one transaction, run by
// the workers) and the answer is 202 with Location: /v2/jobs/{id}. GET /v2/jobs/{id} is the
// job's state; GET /v2/jobs/{id}/result is, once the job has succeeded, the
// $inference_response the synchronous call would have returned. The request's model name,
// id and outputs are kept in the job's metadata (oip.model, oip.id, oip.outputs).

// Metadata keys of a job submitted through /v2.
const (
	oipMetaModel   = "oip.model"
	oipMetaID      = "oip.id"
	oipMetaOutputs = "oip.outputs"
)

// DefaultOIPAsyncBodyLimit is the default of Config.OIPAsyncBodyLimit.
const DefaultOIPAsyncBodyLimit int64 = 256 << 20

// oipAsyncUpload bounds the body of an asynchronous infer by Config.OIPAsyncBodyLimit (the
// global body limit skips it) and gives it the time of a job upload; a synchronous infer
// passes through (the global limit applies).
func (s *Server) oipAsyncUpload(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !isOIPAsyncInfer(c) {
			return next(c)
		}
		req := c.Request()
		if req.ContentLength > s.cfg.OIPAsyncBodyLimit {
			return &http.MaxBytesError{Limit: s.cfg.OIPAsyncBodyLimit}
		}
		rc := http.NewResponseController(c.Response())
		_ = rc.SetReadDeadline(time.Now().Add(jobUploadTimeout))
		_ = rc.SetWriteDeadline(time.Now().Add(jobUploadTimeout + time.Minute))
		req.Body = http.MaxBytesReader(c.Response(), req.Body, s.cfg.OIPAsyncBodyLimit)
		return next(c)
	}
}

// prefersAsync reports whether the request's Prefer header(s) hold the respond-async
// preference (RFC 7240: comma-separated preferences, each with optional parameters after ';').
func prefersAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			token, _, _ := strings.Cut(pref, ";")
			token, _, _ = strings.Cut(token, "=")
			if strings.EqualFold(strings.TrimSpace(token), "respond-async") {
				return true
			}
		}
	}
	return false
}

// rowsSource is a job.RowSource over the rows of a checked inference request.
type rowsSource struct {
	plan oip.Plan
	next int
}

func (r *rowsSource) Next() ([]float64, error) {
	if r.next == len(r.plan.Inputs) {
		return nil, io.EOF
	}
	r.next++
	return r.plan.Inputs[r.next-1].Features, nil
}

// oipJob is the state of an asynchronous inference, GET /v2/jobs/{id}.
type oipJob struct {
	ID           uuid.UUID  `json:"id"`
	Status       string     `json:"status"`
	ModelName    string     `json:"model_name"`
	ModelVersion string     `json:"model_version"`
	RequestID    string     `json:"request_id,omitempty"` // the inference request's id
	Total        int        `json:"total"`
	Processed    int        `json:"processed"`
	Failed       int        `json:"failed"`
	Progress     float64    `json:"progress"`
	CreatedAt    time.Time  `json:"created_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	Error        *string    `json:"error"`
	// Result is the URL of the job's $inference_response (it answers once Status is
	// succeeded).
	Result string `json:"result"`
}

func oipJobOf(j job.Job) oipJob {
	return oipJob{
		ID: j.ID, Status: j.Status, ModelName: j.Metadata[oipMetaModel], ModelVersion: j.ModelVersion,
		RequestID: j.Metadata[oipMetaID], Total: j.Total, Processed: j.Processed, Failed: j.Failed,
		Progress: j.Progress, CreatedAt: j.CreatedAt.UTC(), FinishedAt: j.FinishedAt, Error: j.Error,
		Result: oipJobPath(j.ID) + "/result",
	}
}

func oipJobPath(id uuid.UUID) string { return oipPrefix + "/jobs/" + id.String() }

// submitOIPJob answers an infer with Prefer: respond-async: the request is checked as the
// synchronous call would check it (structure and the predict feature's rules on every row),
// then stored as a job. It needs the jobs scope besides predict.
func (s *Server) submitOIPJob(c echo.Context, name, version string, req *oip.InferRequest) error {
	ctx := c.Request().Context()
	if p, _ := principalFrom(ctx); !p.Can(auth.ScopeJobs) {
		return forbidden(auth.ScopeJobs)
	}
	plan, err := s.deps.OIP.Check(name, version, req)
	if err != nil {
		return err
	}
	if err := oip.CheckValues(plan); err != nil {
		return err
	}
	first := plan.Inputs[0]
	opts := job.Options{
		ModelVersion: first.ModelVersion, Preprocessing: first.Preprocessing, ConfidenceThreshold: first.ConfidenceThreshold,
		Metadata: map[string]string{oipMetaModel: plan.Model.Name, oipMetaOutputs: strings.Join(plan.Outputs, ",")},
	}
	if plan.ID != "" {
		opts.Metadata[oipMetaID] = plan.ID
	}
	j, err := s.deps.Jobs.Submit(ctx, ownerOf(c), opts, job.FormatJSON, &rowsSource{plan: plan}, nil)
	switch {
	case errors.Is(err, job.ErrTooLarge):
		return oip.Invalid("inputs[0]: %d rows are more than an asynchronous inference takes (%s)", plan.Rows,
			strings.TrimPrefix(err.Error(), job.ErrTooLarge.Error()+": "))
	case err != nil:
		if _, ok := errors.AsType[*oip.Error](err); ok {
			return err
		}
		if k := oip.KindOf(oip.FromPrediction(err)); k == oip.KindInvalid || k == oip.KindNotFound {
			return oip.FromPrediction(err)
		}
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, oipJobPath(j.ID))
	c.Response().Header().Set("Preference-Applied", "respond-async")
	return c.JSON(http.StatusAccepted, oipJobOf(j))
}

// oipJobFor reads the job of the path's id: only a job submitted through /v2 by the same key.
func (s *Server) oipJobFor(c echo.Context) (job.Job, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return job.Job{}, oip.NotFound("no asynchronous inference %q", truncateRunes(c.Param("id"), 64))
	}
	j, err := s.deps.Jobs.Get(c.Request().Context(), ownerOf(c), id)
	if errors.Is(err, job.ErrNotFound) || err == nil && j.Metadata[oipMetaModel] == "" {
		return job.Job{}, oip.NotFound("no asynchronous inference %s for this API key", id)
	}
	return j, err
}

// handleOIPGetJob answers GET /v2/jobs/{id}.
func (s *Server) handleOIPGetJob() echo.HandlerFunc {
	return func(c echo.Context) error {
		j, err := s.oipJobFor(c)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, oipJobOf(j))
	}
}

// handleOIPJobResult answers GET /v2/jobs/{id}/result: the $inference_response of a job
// that succeeded; 409 {"error"} (with Retry-After while it runs) otherwise.
func (s *Server) handleOIPJobResult() echo.HandlerFunc {
	return func(c echo.Context) error {
		j, err := s.oipJobFor(c)
		if err != nil {
			return err
		}
		switch {
		case !job.Terminal(j.Status):
			c.Response().Header().Set("Retry-After", "1")
			return c.JSON(http.StatusConflict, oipError{Error: fmt.Sprintf("the inference is %s: %d of %d rows done; "+
				"its result is ready when GET %s says succeeded", j.Status, j.Processed+j.Failed, j.Total, oipJobPath(j.ID))})
		case j.Status != "succeeded":
			msg := "the inference " + j.Status
			if j.Error != nil {
				msg += ": " + *j.Error
			}
			return c.JSON(http.StatusConflict, oipError{Error: msg})
		case j.Failed > 0:
			return c.JSON(http.StatusConflict, oipError{Error: fmt.Sprintf("%d of %d rows failed; "+
				"read them at /api/v1/jobs/%s/results", j.Failed, j.Total, j.ID)})
		}
		rows := make([]oip.Row, 0, j.Total)
		err = s.deps.Jobs.StreamResults(c.Request().Context(), ownerOf(c), j.ID, func(r job.Result) error {
			if r.Prediction == nil || r.Confidence == nil {
				return fmt.Errorf("job %s: row %d has no prediction", j.ID, r.Index)
			}
			rows = append(rows, oip.Row{Probability: *r.Prediction, Class: r.PredictionClass, Confidence: *r.Confidence})
			return nil
		})
		if err != nil {
			return err
		}
		var outputs []string
		if o := j.Metadata[oipMetaOutputs]; o != "" {
			outputs = strings.Split(o, ",")
		} else {
			outputs = oip.Outputs()
		}
		resp := oip.Response(j.Metadata[oipMetaModel], j.ModelVersion, j.Metadata[oipMetaID], outputs, rows)
		return c.JSON(http.StatusOK, oipResponseOf(resp))
	}
}
