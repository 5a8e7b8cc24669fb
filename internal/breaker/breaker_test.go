package breaker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBreaker(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	b := New(2 * time.Second)
	b.now = func() time.Time { return now }

	require.False(t, b.Open(), "a new breaker is closed")
	require.True(t, b.Trip(), "the first failure opens it")
	require.True(t, b.Open())
	now = now.Add(time.Second)
	require.False(t, b.Trip(), "a failure while open is no transition")
	require.True(t, b.Open())
	now = now.Add(1999 * time.Millisecond)
	require.True(t, b.Open(), "the second failure restarted the cooldown")
	now = now.Add(time.Millisecond)
	require.False(t, b.Open(), "closed once the cooldown from the last failure is over")
	require.True(t, b.Trip(), "and the next failure opens it again")
	require.Equal(t, 2*time.Second, b.Cooldown())
}
