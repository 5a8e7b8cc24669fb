package httpapi

import (
	"context"
	"errors"
	"github.com/predq/predq/internal/prediction"
	"io"

	"github.com/google/uuid"

	"github.com/predq/predq/internal/job"
)

// fakeJobs stands in for the job feature in the handler tests: Submit drains the rows (so
// that decoding and row errors surface as they would), the reads know no job. The real
// feature is exercised against Postgres in internal/job and cmd/api.
type fakeJobs struct{}

func (*fakeJobs) Submit(_ context.Context, _ job.Owner, o job.Options, format string, src job.RowSource, late func() (job.Options, error)) (job.Job, error) {
	n := 0
	for {
		_, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return job.Job{}, err
		}
		n++
	}
	if late != nil {
		var err error
		if o, err = late(); err != nil {
			return job.Job{}, err
		}
	}
	return job.Job{ID: uuid.New(), Status: job.StatusQueued, Total: n, ModelVersion: o.ModelVersion, InputFormat: format}, nil
}

func (*fakeJobs) Get(context.Context, job.Owner, uuid.UUID) (job.Job, error) {
	return job.Job{}, job.ErrNotFound
}

func (*fakeJobs) List(context.Context, job.Owner, job.ListFilter) ([]job.Job, string, error) {
	return nil, "", nil
}

func (*fakeJobs) Results(context.Context, job.Owner, uuid.UUID, int, int) ([]job.Result, int, error) {
	return nil, -1, job.ErrNotFound
}

func (*fakeJobs) StreamResults(context.Context, job.Owner, uuid.UUID, func(job.Result) error) error {
	return job.ErrNotFound
}

func (*fakeJobs) Cancel(context.Context, job.Owner, uuid.UUID) (job.Job, error) {
	return job.Job{}, job.ErrNotFound
}

// fakePromoter records promotions.
type fakePromoter struct{}

func (fakePromoter) Promote(context.Context, string, string) error { return nil }

// fakePredictions knows no stored prediction.
type fakePredictions struct{}

func (fakePredictions) List(context.Context, prediction.ListFilter) ([]prediction.Stored, string, error) {
	return nil, "", nil
}

func (fakePredictions) Get(context.Context, string, string) (prediction.Stored, error) {
	return prediction.Stored{}, prediction.ErrNotFound
}

func (*fakeJobs) Replay(context.Context, job.Owner, uuid.UUID, job.Options) (job.Job, error) {
	return job.Job{}, job.ErrNotFound
}

func (*fakeJobs) Compare(context.Context, job.Owner, uuid.UUID) (job.Comparison, error) {
	return job.Comparison{}, job.ErrNotFound
}
