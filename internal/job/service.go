package job

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// Models resolves a version or alias to a loaded model.
type Models interface {
	Resolve(name string) (*inference.Model, error)
}

// Enqueuer hands work to the queues. Every method is idempotent (deterministic task ids):
// calling it twice for the same work enqueues it once.
type Enqueuer interface {
	EnqueueJobRun(ctx context.Context, jobID uuid.UUID) error
	EnqueueChunks(ctx context.Context, jobID uuid.UUID, chunks []int) error
	EnqueueWebhook(ctx context.Context, deliveryID uuid.UUID) error
	EnqueueJobAlert(ctx context.Context, s Summary) error
}

// Waker wakes idle workers for a small job at once instead of at their next look at the
// queues (tasks.Waker); a hint, never relied on: the job's tokens are enqueued as usual.
type Waker interface {
	Wake(ctx context.Context, jobID uuid.UUID, chunks int) error
}

// Notifier records the webhook delivery of a job (*webhook.Store). CreateDelivery runs inside
// the job's terminal transaction and returns the delivery's id: recording it in the same
// transaction as the status makes the delivery impossible to lose, since the reconciler
// enqueues any delivery left pending. MarkEnqueued notes, after its task was enqueued, that
// the reconciler may leave it alone for a while.
type Notifier interface {
	CreateDelivery(ctx context.Context, tx pgx.Tx, jobID uuid.UUID, eventType, url string, payload json.RawMessage) (uuid.UUID, error)
	MarkEnqueued(ctx context.Context, deliveryID uuid.UUID) error
}

// URLChecker refuses webhook URLs (SSRF guard); it returns a descriptive error.
type URLChecker func(ctx context.Context, raw string) error

// Config holds the Service's collaborators and limits.
type Config struct {
	Pool *pgxpool.Pool
	// ReadPool, when set, is a streaming replica of Pool (DATABASE_READ_URL) for the reads
	// that tolerate lag: List reads it, and Results and StreamResults read it when it has
	// replayed everything Pool had when the job was read (else Pool; see readerFor). Get and
	// every write use Pool. nil: Pool serves everything.
	ReadPool *pgxpool.Pool
	Models   Models
	Enqueuer Enqueuer // nil: nothing is enqueued (the reconciler will)
	Notifier Notifier // nil: webhooks are not recorded
	Waker    Waker    // nil: no wake-up; jobs of at most WakeChunks chunks wake the workers
	// DeliverNow, when set (the worker), makes the first attempt of a finished job's
	// webhook at once, in the process that finished it, before its webhook:deliver task is
	// enqueued for the retries; it reports whether the delivery is settled (delivered, or
	// failed for good). At most 16 such attempts run at once; past that the task alone does.
	DeliverNow func(ctx context.Context, deliveryID uuid.UUID) (settled bool, err error)
	CheckURL   URLChecker
	MaxSamples int // JSON bodies; default DefaultMaxSamples
	MaxRows    int // NDJSON/CSV bodies; default DefaultMaxRows
	ChunkSize  int // rows per chunk; default 5,000
	// ChunkWriters bounds the chunk commits (result COPYs) of this process at once; default
	// 2. Inference and reads are not bounded by it, only by the worker's concurrency.
	ChunkWriters int
	Timeout      time.Duration // deadline after submission; default 1h
	// ChunkLease is how long a claimed chunk is a worker's before another may claim it
	// (a worker that died); default 1 min. A chunk still running past it may run twice,
	// which writes and counts nothing twice.
	ChunkLease time.Duration
	// ChunkAttempts is how many claims a chunk gets before its items are recorded as
	// failed; default 6.
	ChunkAttempts int
	// MaxPendingRows and MaxQueuedJobs are the default quotas of a key (an Owner's own
	// override them): rows pending across its active jobs, and its active (queued or running)
	// jobs; defaults 20,000,000 and 100. Negative: no limit.
	MaxPendingRows int64
	MaxQueuedJobs  int
	Registerer     prometheus.Registerer
	Logger         *slog.Logger
}

// Default limits of a submission's rows.
const (
	DefaultMaxSamples = 100_000   // rows of a JSON body
	DefaultMaxRows    = 5_000_000 // rows of an NDJSON or CSV body
)

// WakeChunks is the most chunks of a job that wakes the workers (Config.Waker): small jobs,
// whose latency the queue's polling would dominate.
const WakeChunks = 4

// Default quotas of a key (Config.MaxPendingRows, Config.MaxQueuedJobs).
const (
	DefaultMaxPendingRows = 20_000_000
	DefaultMaxQueuedJobs  = 100
)

// Service runs the job feature.
type Service struct {
	cfg        Config
	writers    chan struct{}
	delivering chan struct{} // bounds the DeliverNow attempts under way
	// claims bounds the chunks this process has claimed and not yet committed (RunNext) to
	// twice ChunkWriters: more would only wait for a writer while holding their leases, and
	// a small job of another key, claimed next by fair order, would wait behind all of them.
	claims  chan struct{}
	metrics *metrics
	logger  *slog.Logger
}

// NewService builds a Service.
func NewService(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Models == nil {
		return nil, errors.New("job: Pool and Models are required")
	}
	if cfg.MaxSamples <= 0 {
		cfg.MaxSamples = DefaultMaxSamples
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 5000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Hour
	}
	if cfg.ChunkWriters <= 0 {
		cfg.ChunkWriters = 2
	}
	if cfg.ChunkLease <= 0 {
		cfg.ChunkLease = time.Minute
	}
	if cfg.ChunkAttempts <= 0 {
		cfg.ChunkAttempts = 6
	}
	if cfg.MaxPendingRows == 0 {
		cfg.MaxPendingRows = DefaultMaxPendingRows
	}
	if cfg.MaxQueuedJobs == 0 {
		cfg.MaxQueuedJobs = DefaultMaxQueuedJobs
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, writers: make(chan struct{}, cfg.ChunkWriters), delivering: make(chan struct{}, 16),
		claims:  make(chan struct{}, 2*cfg.ChunkWriters),
		metrics: newMetrics(cfg.Registerer), logger: logger}, nil
}

// Formats of a submission body.
const (
	FormatJSON   = "json"
	FormatNDJSON = "ndjson"
	FormatCSV    = "csv"
)

// maxRowErrors is how many bad rows a refused submission names.
const maxRowErrors = 10

// ValidateOptions checks the options of a submission and resolves the model. It returns a
// *validate.Error for broken rules and an error wrapping prediction.ErrModelNotFound.
func (s *Service) ValidateOptions(ctx context.Context, o *Options) (*inference.Model, error) {
	o.ModelVersion, o.Preprocessing = prediction.NormalizeOptions(o.ModelVersion, o.Preprocessing)
	v := &validate.Error{}
	prediction.ValidateOptions(v, o.ModelVersion, o.ConfidenceThreshold, o.Preprocessing)
	if len(o.Metadata) > 16 {
		v.Add("metadata", "must hold at most 16 pairs, got %d", len(o.Metadata))
	}
	for k, val := range o.Metadata {
		if k == "" || len(k) > 64 {
			v.Add("metadata", "keys must be 1 to 64 characters")
			break
		}
		if len(val) > 512 {
			v.Add("metadata."+k, "must be at most 512 characters")
		}
	}
	if o.Priority == "" {
		o.Priority = PriorityNormal
	} else if !ValidPriority(o.Priority) {
		v.Add("priority", "must be high, normal or low, got %q", truncate(o.Priority, 32))
	}
	if o.WebhookURL != "" && s.cfg.CheckURL != nil {
		if err := s.cfg.CheckURL(ctx, o.WebhookURL); err != nil {
			v.Add("webhook_url", "%s", err.Error())
		}
	}
	if v.Len() > 0 {
		return nil, v
	}
	m, err := s.cfg.Models.Resolve(o.ModelVersion)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", prediction.ErrModelNotFound, o.ModelVersion)
	}
	if !m.Supports(o.Preprocessing) {
		return nil, validate.Field("preprocessing", "model %s supports %v, not %q", m.Version, m.Preprocessings(), o.Preprocessing)
	}
	return m, nil
}

// Submit stores a job and all its rows in one transaction, then enqueues job:run. The rows
// are read from src as they are stored (bounded memory). A bad row refuses the whole
// submission with a *validate.Error naming the first bad rows; a body that is not valid
// JSON is a *DecodeError; more rows than allowed is ErrTooLarge; no row at all is a
// *validate.Error. In every such case nothing is stored. If the enqueue fails after the
// commit, the job stays queued (the reconciler enqueues it) and Submit still succeeds.
//
// For a JSON body the options are only complete once src is drained: pass lateOpts, which
// Submit calls then and validates (still inside the transaction).
func (s *Service) Submit(ctx context.Context, owner Owner, opts Options, format string, src RowSource, lateOpts func() (Options, error)) (Job, error) {
	var model *inference.Model
	var err error
	if lateOpts == nil {
		if model, err = s.ValidateOptions(ctx, &opts); err != nil {
			return Job{}, err
		}
	}
	maxRows := s.cfg.MaxRows
	if format == FormatJSON {
		maxRows = s.cfg.MaxSamples
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Job{}, err
	}
	start := time.Now()
	// Quotas, before the body is read: a key already at a quota is refused at once. The
	// check that counts this job's rows comes after them, under the key's lock.
	if err := s.checkQuota(ctx, s.cfg.Pool, owner, id, 0, false); err != nil {
		return Job{}, err
	}
	var total, chunks int
	err = postgres.WithTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		// The job row first (status queued, no rows yet), so that the chunks can refer to it.
		meta, _ := json.Marshal(orEmpty(opts.Metadata))
		if _, err := tx.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing, confidence_threshold,
				chunk_size, metadata, webhook_url, input_format, deadline_at, priority)
			VALUES ($1, $2, $3, '', '', 0.5, $4, $5, NULLIF($6, ''), $7, now() + $8::interval, $9)`,
			id, owner.ID, owner.Name, s.cfg.ChunkSize, meta, opts.WebhookURL, format, s.cfg.Timeout.String(), cmp.Or(opts.Priority, PriorityNormal)); err != nil {
			return classify(err)
		}
		inputSize := 0
		if model != nil {
			inputSize = model.InputSize
		}
		packer := &chunkPacker{jobID: id, format: format, src: src, chunkSize: s.cfg.ChunkSize, inputSize: inputSize, maxRows: maxRows}
		if lateOpts != nil {
			// JSON bodies: the model (hence the input size) may be named after the samples.
			// Rows are checked against the size of the first row, then against the model.
			packer.inputSize = -1
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"job_chunks"}, []string{"job_id", "chunk_index", "start_index", "rows", "features", "encoding"}, packer); err != nil {
			if packer.err != nil {
				return packer.err
			}
			return classify(err)
		}
		if packer.err != nil {
			return packer.err
		}
		if lateOpts != nil {
			if opts, err = lateOpts(); err != nil {
				return err
			}
			if model, err = s.ValidateOptions(ctx, &opts); err != nil {
				return err
			}
			if packer.rows > 0 && packer.inputSize != model.InputSize {
				return validate.Field("samples[0].features", "model %s takes %d features, got %d", model.Version, model.InputSize, packer.inputSize)
			}
			meta, _ := json.Marshal(orEmpty(opts.Metadata))
			if _, err := tx.Exec(ctx, `UPDATE jobs SET metadata = $2, webhook_url = NULLIF($3, ''), priority = $4 WHERE id = $1`,
				id, meta, opts.WebhookURL, opts.Priority); err != nil {
				return classify(err)
			}
		}
		if packer.rows == 0 {
			field := "body"
			if format == FormatJSON {
				field = "samples"
			}
			return validate.Field(field, "must hold at least 1 sample")
		}
		total, chunks = packer.rows, packer.chunks
		if err := s.checkQuota(ctx, tx, owner, id, int64(packer.rows), true); err != nil {
			return err
		}
		if err := liftTenant(ctx, tx, owner.ID, owner.Weight, id); err != nil {
			return classify(err)
		}
		_, err := tx.Exec(ctx, `UPDATE jobs SET total = $2, chunks_total = $3, model_version = $4, preprocessing = $5,
				confidence_threshold = $6 WHERE id = $1`,
			id, packer.rows, packer.chunks, model.Version, opts.Preprocessing, opts.ConfidenceThreshold)
		return classify(err)
	})
	if err != nil {
		return Job{}, err
	}
	s.metrics.submitted.Inc()
	s.metrics.items.WithLabelValues("submitted").Add(float64(total))
	s.logger.InfoContext(ctx, "job submitted", "job_id", id, "rows", total, "format", format, "took_ms", time.Since(start).Milliseconds())
	if s.cfg.Waker != nil && chunks <= WakeChunks {
		if err := s.cfg.Waker.Wake(ctx, id, chunks); err != nil {
			s.logger.WarnContext(ctx, "workers not woken; the job runs through the queue", "job_id", id, "error", err)
		}
	}
	if s.cfg.Enqueuer != nil {
		if err := s.cfg.Enqueuer.EnqueueJobRun(ctx, id); err != nil {
			s.logger.WarnContext(ctx, "job stored but not enqueued; the reconciler will enqueue it", "job_id", id, "error", err)
		}
	}
	return s.Get(ctx, owner, id)
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// classify turns a connection failure into ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if postgres.IsUnavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// chunkPacker is a pgx.CopyFromSource: it reads rows from src, validates them, and packs
// every chunkSize of them into one job_chunks row. On the first bad row it stops feeding
// COPY but goes on reading (up to maxRowErrors bad rows) to name them all.
type chunkPacker struct {
	jobID     uuid.UUID
	format    string
	src       RowSource
	chunkSize int
	inputSize int // -1: take the first row's size
	maxRows   int

	rows, chunks int
	buf          []byte
	n            int // rows in buf
	scale        int // of the last row (appendDecimalRow)
	values       []any
	err          error
	eof          bool
}

func (p *chunkPacker) Next() bool {
	if p.err != nil || p.eof {
		return false
	}
	p.buf, p.n = make([]byte, 0, cap(p.buf)), 0 // COPY may still hold the previous chunk
	start := p.rows
	for p.n < p.chunkSize {
		x, err := p.src.Next()
		if errors.Is(err, io.EOF) {
			p.eof = true
			break
		}
		if err != nil {
			p.fail(err)
			return false
		}
		if p.rows >= p.maxRows {
			p.err = fmt.Errorf("%w: more than %d rows", ErrTooLarge, p.maxRows)
			return false
		}
		if v := p.check(p.rows+1, x); v != nil {
			p.fail(v)
			return false
		}
		if p.n == 0 {
			p.buf = binary.AppendUvarint(p.buf, uint64(len(x)))
		}
		p.buf = appendDecimalRow(p.buf, x, &p.scale)
		p.rows++
		p.n++
	}
	if p.n == 0 {
		return false
	}
	p.values = []any{p.jobID, p.chunks, start, p.n, p.buf, encodingDecimal}
	p.chunks++
	return true
}

func (p *chunkPacker) check(row int, x []float64) *RowError {
	if len(x) == p.inputSize && prediction.FeaturesValid(x) {
		return nil // the common case, decided without building a validate.Error
	}
	v := &validate.Error{}
	prediction.ValidateFeatures(v, "features", x)
	if v.Len() > 0 {
		return &RowError{Row: row, Field: v.Errors[0].Field, Message: v.Errors[0].Message}
	}
	if p.inputSize == -1 {
		p.inputSize = len(x)
	}
	if len(x) != p.inputSize {
		return &RowError{Row: row, Field: "features", Message: fmt.Sprintf("must hold %d numbers (the model's input size), got %d", p.inputSize, len(x))}
	}
	return nil
}

// fail records a bad row and scans on for up to maxRowErrors of them. A non-row error (a
// broken body) ends the scan at once.
func (p *chunkPacker) fail(first error) {
	var re *RowError
	if !errors.As(first, &re) {
		p.err = first
		return
	}
	v := &validate.Error{}
	add := func(re *RowError) {
		v.Add(p.rowField(re), "row %d: %s", re.Row, re.Message)
	}
	add(re)
	for v.Len() < maxRowErrors {
		x, err := p.src.Next()
		if err != nil {
			if errors.As(err, &re) {
				add(re)
				continue
			}
			break // EOF or a broken body: report what we have
		}
		p.rows++
		if re := p.check(p.rows, x); re != nil {
			add(re)
		}
	}
	p.err = v
}

// rowField names a bad row's field as the client wrote it: samples[i].features[j] (0-based)
// for JSON bodies, rows[n].features[j] (n the 1-based line or record) for NDJSON and CSV.
func (p *chunkPacker) rowField(re *RowError) string {
	switch {
	case re.Row == 0:
		return re.Field
	case p.format == FormatJSON:
		return "samples[" + strconv.Itoa(re.Row-1) + "]." + re.Field
	default:
		return "rows[" + strconv.Itoa(re.Row) + "]." + re.Field
	}
}

func (p *chunkPacker) Values() ([]any, error) { return p.values, nil }
func (p *chunkPacker) Err() error             { return p.err }
