// Command train trains the shipped sonar models from data/sonar.csv into models/:
// v1.0.0.json (logistic regression; standard and minmax variants) and v2.0.0.json (MLP;
// standard, minmax and robust variants), and prints each variant's cross-validated metrics.
//
// Usage, from the repository root:
//
//	go run ./cmd/train [-data data/sonar.csv] [-out models]
//	go run ./cmd/train -tune   # rerun the hyperparameter search (minutes); writes nothing
//
// The data file must be UCI's sonar.all-data (its sha256 is checked). Training is
// deterministic: the same data produce byte-identical artifacts on the same platform
// (GOARCH) and gonum version, which TestTrainingReproducesArtifacts checks. After changing
// the training, regenerate the artifacts with the command above and the inference golden
// file with `go test ./internal/inference/ -run Golden -update`.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "train:", err)
		os.Exit(1)
	}
}
