package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The dev stack sets dashboard credentials where the environment has none, so that the
// Dashboard URL it prints answers (the api mounts asynqmon only with both), and keeps the
// configured ones.
func TestDevMonitoringCredentials(t *testing.T) {
	t.Parallel()

	t.Run("generated when unset", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{}
		user, password := devMonitoringCredentials(env)
		require.Equal(t, "admin", user)
		require.Len(t, password, 24)
		require.Equal(t, user, env["MONITORING_USER"])
		require.Equal(t, password, env["MONITORING_PASSWORD"])
		_, other := devMonitoringCredentials(map[string]string{})
		require.NotEqual(t, password, other, "a random password per run")
	})

	t.Run("configured ones kept", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"MONITORING_USER": "ops", "MONITORING_PASSWORD": "s3cret-s3cret"}
		user, password := devMonitoringCredentials(env)
		require.Equal(t, "ops", user)
		require.Equal(t, "s3cret-s3cret", password)
	})
}
