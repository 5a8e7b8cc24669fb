package inference

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// LogLossEpsilon clips probabilities to [eps, 1-eps] in LogLoss, so that a confident
// mistake costs at most -ln(eps) ≈ 34.5 instead of +Inf.
const LogLossEpsilon = 1e-15

// Accuracy returns the fraction of rows whose prediction p >= 0.5 agrees with the label y
// (1 positive, 0 negative). It returns NaN for no rows.
func Accuracy(y, p []float64) float64 {
	if len(y) == 0 {
		return math.NaN()
	}
	var hits int
	for i := range y {
		if (p[i] >= 0.5) == (y[i] == 1) {
			hits++
		}
	}
	return float64(hits) / float64(len(y))
}

// LogLoss returns the mean binary cross-entropy of predictions p for labels y (1 positive,
// 0 negative), with p clipped to [LogLossEpsilon, 1-LogLossEpsilon]. It returns NaN for no
// rows.
func LogLoss(y, p []float64) float64 {
	if len(y) == 0 {
		return math.NaN()
	}
	var sum float64
	for i := range y {
		q := min(max(p[i], LogLossEpsilon), 1-LogLossEpsilon)
		if y[i] == 1 {
			sum -= math.Log(q)
		} else {
			sum -= math.Log1p(-q)
		}
	}
	return sum / float64(len(y))
}

// ROCAUC returns the area under the ROC curve of scores p for labels y (1 positive, 0
// negative): the probability that a random positive scores above a random negative, ties
// counting one half. It is computed from ranks (the Mann-Whitney U statistic), with tied
// scores sharing their average rank. It returns an error wrapping ErrInvalidData when y
// lacks either class or the lengths differ.
func ROCAUC(y, p []float64) (float64, error) {
	if len(y) != len(p) {
		return 0, fmt.Errorf("roc auc: %w: %d labels, %d scores", ErrInvalidData, len(y), len(p))
	}
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(p[a], p[b]) })
	var nPos, nNeg int
	var rankSumPos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && p[idx[j]] == p[idx[i]] {
			j++
		}
		avgRank := float64(i+1+j) / 2 // ranks i+1..j, averaged
		for _, k := range idx[i:j] {
			if y[k] == 1 {
				nPos++
				rankSumPos += avgRank
			} else {
				nNeg++
			}
		}
		i = j
	}
	if nPos == 0 || nNeg == 0 {
		return 0, fmt.Errorf("roc auc: %w: need both classes, got %d positive and %d negative", ErrInvalidData, nPos, nNeg)
	}
	u := rankSumPos - float64(nPos)*float64(nPos+1)/2
	return u / (float64(nPos) * float64(nNeg)), nil
}
