package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/hibiken/asynq"
)

// Logger adapts a *slog.Logger to asynq.Logger. asynq passes preformatted messages; each
// becomes one record with component=asynq.
type Logger struct {
	l *slog.Logger
}

var _ asynq.Logger = (*Logger)(nil)

// NewLogger returns an asynq.Logger writing to l.
func NewLogger(l *slog.Logger) *Logger { return &Logger{l: l.With("component", "asynq")} }

func (a *Logger) log(level slog.Level, args []any) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	a.l.Log(ctx, level, strings.TrimSpace(fmt.Sprint(args...)))
}

// Debug logs at debug level.
func (a *Logger) Debug(args ...any) { a.log(slog.LevelDebug, args) }

// Info logs at info level.
func (a *Logger) Info(args ...any) { a.log(slog.LevelInfo, args) }

// Warn logs at warn level.
func (a *Logger) Warn(args ...any) { a.log(slog.LevelWarn, args) }

// Error logs at error level.
func (a *Logger) Error(args ...any) { a.log(slog.LevelError, args) }

// Fatal logs at error level and exits the process with status 1, as asynq.Logger requires
// (asynq v0.26 itself never calls it).
func (a *Logger) Fatal(args ...any) {
	a.l.Error(strings.TrimSpace(fmt.Sprint(args...)), "fatal", true)
	os.Exit(1)
}

// AsynqLogLevel maps a LOG_LEVEL value (debug, info, warn, error) to asynq's level.
func AsynqLogLevel(level string) asynq.LogLevel {
	var l asynq.LogLevel
	if err := l.Set(level); err != nil {
		return asynq.InfoLevel
	}
	return l
}
