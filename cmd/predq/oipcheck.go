package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/predq/predq/internal/oipcheck"
)

// oipCheckCmd is `predq oip-check [URL]`: the Open Inference Protocol conformance checker
// (internal/oipcheck) against any OIP REST server, predq's or another's.
func (a *app) oipCheckCmd() *cobra.Command {
	var model, modelVersion string
	cmd := &cobra.Command{
		Use:   "oip-check [URL]",
		Short: "Check that a server speaks the Open Inference Protocol v2 (REST); exit 1 on a failed check",
		Long: `Runs the conformance checks of the Open Inference Protocol v2 REST binding against URL
(default: the configured server): every path, the required fields, the id echo, flat and
nested tensor data, and the protocol's errors for a wrong datatype or shape and an unknown
model or version. Prints a table of the checks (pass, fail, n/a) and exits 1 when any check
fails. Works against any OIP server (predq, Triton, KServe); the API key, if set, is sent as
Authorization: Bearer.`,
		Example: `  predq oip-check                                   # the configured predq server
  predq oip-check http://triton:8000 --model densenet_onnx --model-version 1`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var override string
			if len(args) == 1 {
				override = args[0]
			}
			u, key, err := a.endpoint(override)
			if err != nil {
				return err
			}
			rep, err := oipcheck.Run(cmd.Context(), oipcheck.Config{URL: u, APIKey: key, Model: model, Version: modelVersion}, a.stdout)
			if err != nil {
				return usagef("%w", err)
			}
			if !rep.OK() {
				return fmt.Errorf("%d of the checks failed", rep.Count(oipcheck.Fail))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "sonar", "a model the server serves")
	cmd.Flags().StringVar(&modelVersion, "model-version", "", "a version of the model for the versioned paths (default: the first its metadata lists)")
	return cmd
}
