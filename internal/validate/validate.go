// Package validate carries field-level validation problems from the features to the edge that
// reports them (the HTTP layer turns an *Error into a 422 problem).
package validate

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field of the input. Field is a JSON path as the client
// wrote it: "features", "features[3]", "samples[2].model_version".
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a list of field problems. The zero value holds none.
type Error struct {
	Errors []FieldError
}

// Add records a problem with field.
func (e *Error) Add(field, format string, args ...any) {
	e.Errors = append(e.Errors, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Merge appends the problems of other, each field prefixed with prefix (e.g. "samples[2].").
func (e *Error) Merge(prefix string, other *Error) {
	if other == nil {
		return
	}
	for _, fe := range other.Errors {
		e.Errors = append(e.Errors, FieldError{Field: prefix + fe.Field, Message: fe.Message})
	}
}

// Len reports how many problems are recorded.
func (e *Error) Len() int {
	if e == nil {
		return 0
	}
	return len(e.Errors)
}

// Err returns e when it holds problems and nil otherwise, so that callers can write
// `return v.Err()`.
func (e *Error) Err() error {
	if e.Len() == 0 {
		return nil
	}
	return e
}

// Error implements error.
func (e *Error) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.Field + ": " + fe.Message
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Field returns an *Error with a single problem.
func Field(field, format string, args ...any) *Error {
	e := &Error{}
	e.Add(field, format, args...)
	return e
}
