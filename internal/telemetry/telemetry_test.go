package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoggerAddsRequestIDOnce(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := NewLogger(&buf, "info", "test")
	ctx := WithRequestID(context.Background(), "req-1")
	l.InfoContext(ctx, "from the context")
	l.InfoContext(ctx, "already named", slog.String("request_id", "req-1"))
	l.DebugContext(ctx, "below the level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, line := range lines {
		require.Equal(t, 1, strings.Count(line, `"request_id"`), line)
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		require.Equal(t, "req-1", m["request_id"])
		require.Equal(t, "test", m["service"])
	}
}
