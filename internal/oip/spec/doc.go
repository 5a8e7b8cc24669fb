// Package spec holds the Open Inference Protocol's REST description, vendored from
// github.com/kserve/open-inference-protocol under the Apache License 2.0 (see LICENSE and
// NOTICE: its ${MODEL_NAME}-style path templates are rewritten to {MODEL_NAME}). Tests
// validate every /v2 answer against it.
package spec

import _ "embed"

// REST is open_inference_rest.yaml.
//
//go:embed open_inference_rest.yaml
var REST []byte
