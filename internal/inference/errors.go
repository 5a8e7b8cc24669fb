package inference

import "errors"

// Sentinel errors. Functions wrap them with context; compare with errors.Is.
var (
	// ErrInputSize: a feature vector's length differs from the model's InputSize.
	ErrInputSize = errors.New("wrong number of features")
	// ErrInvalidInput: a feature is NaN or infinite, or a batch's output slice has the
	// wrong length.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnsupportedPreprocessing: the model has no variant for the preprocessing.
	ErrUnsupportedPreprocessing = errors.New("unsupported preprocessing")
	// ErrChecksum: an artifact's bytes do not match its recorded sha256 checksum.
	ErrChecksum = errors.New("artifact checksum mismatch")
	// ErrInvalidArtifact: an artifact is truncated, not valid JSON, or structurally wrong
	// (unknown kind, wrong vector lengths, non-finite weights, ...).
	ErrInvalidArtifact = errors.New("invalid artifact")
	// ErrInvalidData: training data or a training specification is unusable.
	ErrInvalidData = errors.New("invalid training data")
)
