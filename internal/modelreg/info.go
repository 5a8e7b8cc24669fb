package modelreg

import "errors"

// ErrNotFound is returned for a version or alias that is not registered.
var ErrNotFound = errors.New("model version not found")

// Metrics are a variant's held-out (cross-validated) metrics.
type Metrics struct {
	Accuracy    float64 `json:"accuracy"`
	AccuracyStd float64 `json:"accuracy_std"`
	ROCAUC      float64 `json:"roc_auc"`
	LogLoss     float64 `json:"log_loss"`
	Folds       int     `json:"folds"`
	Repeats     int     `json:"repeats"`
}

// Info describes one registered model version as the API shows it.
type Info struct {
	Version        string             `json:"version"`
	Kind           string             `json:"kind"`
	InputSize      int                `json:"input_size"`
	Preprocessings []string           `json:"preprocessings"`
	Aliases        []string           `json:"aliases"`
	Metrics        map[string]Metrics `json:"metrics"`
	DatasetSHA256  string             `json:"dataset_sha256"`
	Checksum       string             `json:"checksum"`
	Loaded         bool               `json:"loaded"`
}

// LoadFailure names an artifact that could not be loaded, and why.
type LoadFailure struct {
	File  string `json:"file"`
	Error string `json:"error"`
}
