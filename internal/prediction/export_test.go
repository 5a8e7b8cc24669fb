package prediction

// WithoutDirectCopy makes Insert skip the direct COPY and take the conflict-handling path
// alone, as it did before the direct COPY: for the tests and benchmarks that compare them.
func WithoutDirectCopy() StoreOption {
	return func(s *Store) { s.pool = nil }
}
