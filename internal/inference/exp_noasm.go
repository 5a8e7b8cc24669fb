//go:build !amd64 || purego

package inference

// useSigmoidAVX2 is false: there is no assembly for this architecture (or the purego
// build tag asks for none), and sigmoidInPlace runs sigmoidInPlaceGo.
const useSigmoidAVX2 = false

// sigmoidAVX2 is never called here (useSigmoidAVX2 is false); it does nothing, so that
// sigmoidInPlaceAVX2 compiles on every architecture.
func sigmoidAVX2(z []float64, b float64) (n int) { return 0 }
