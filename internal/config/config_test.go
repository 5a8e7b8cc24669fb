package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil))
	require.NoError(t, err)
	require.Equal(t, 8080, c.Port)
	require.Equal(t, c.RedisURL, c.CacheRedisURL)
	require.Equal(t, time.Hour, c.RedisTTL)
	require.Equal(t, "./models", c.ModelPath)
	require.Equal(t, 1000, c.MaxBatchSize)
}

func TestLoadRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		env  map[string]string
		want string // the variable the message must name
	}{
		"port not a number":       {map[string]string{"PORT": "http"}, "PORT: must be a whole number"},
		"port out of range":       {map[string]string{"PORT": "70000"}, "PORT: must be between"},
		"ttl below 60":            {map[string]string{"REDIS_TTL": "59"}, "REDIS_TTL: must be between 60"},
		"pool size 0":             {map[string]string{"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE"},
		"pool size 101":           {map[string]string{"DB_POOL_SIZE": "101"}, "DB_POOL_SIZE"},
		"short secret":            {map[string]string{"SECRET_KEY": "short"}, "SECRET_KEY: must be at least 32"},
		"production no secret":    {map[string]string{"APP_ENV": "production"}, "SECRET_KEY: is required"},
		"bad database scheme":     {map[string]string{"DATABASE_URL": "mysql://x"}, "DATABASE_URL: must use scheme"},
		"bad redis scheme":        {map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL"},
		"bad log level":           {map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		"short api key":           {map[string]string{"API_KEYS": "a:b"}, "API_KEYS"},
		"unknown api key scope":   {map[string]string{"API_KEYS": "a:0123456789abcdef0123:predict+root"}, `API_KEYS: entry 1: unknown scope "root"`},
		"api key scopes by comma": {map[string]string{"API_KEYS": "b:0123456789abcdef0123,a:0123456789abcdef0123:predict:jobs"}, `API_KEYS: entry 2: attribute "jobs" is not name=value`},
		"empty api key scopes":    {map[string]string{"API_KEYS": "a:0123456789abcdef0123:"}, `API_KEYS: entry 1: unknown scope ""`},
		"bad origin":              {map[string]string{"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"},
		"bad webhook secret":      {map[string]string{"WEBHOOK_SECRET": "secret"}, "WEBHOOK_SECRET"},
		"short webhook secret":    {map[string]string{"WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "WEBHOOK_SECRET: must be whsec_ followed"},
		"bad bool":                {map[string]string{"WEBHOOK_ALLOW_PRIVATE": "maybe"}, "WEBHOOK_ALLOW_PRIVATE"},
		"bad duration":            {map[string]string{"REDIS_TIMEOUT": "fast"}, "REDIS_TIMEOUT"},
		"negative rate":           {map[string]string{"RATE_LIMIT": "-1"}, "RATE_LIMIT"},
		"batch size over limit":   {map[string]string{"MAX_BATCH_SIZE": "1000000"}, "MAX_BATCH_SIZE"},
		"worker concurrency 0":    {map[string]string{"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"},
		"otlp endpoint not http":  {map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://x"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		"pprof without port":      {map[string]string{"PPROF_ADDR": "localhost"}, "PPROF_ADDR: \"localhost\" is not a host:port"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(env(tt.env))
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Load(env(map[string]string{"PORT": "x", "REDIS_TTL": "1", "SECRET_KEY": "s"}))
	require.Error(t, err)
	for _, name := range []string{"PORT", "REDIS_TTL", "SECRET_KEY"} {
		require.Contains(t, err.Error(), name+":")
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"DATABASE_URL": "postgres://u:hunter2hunter2@db/x",
		"SECRET_KEY":   strings.Repeat("s", 40),
		"API_KEYS":     "ops:abcdefghijklmnopqrstu",
	}))
	require.NoError(t, err)
	line := fmt.Sprint(c.Redacted()...)
	require.NotContains(t, line, "hunter2")
	require.NotContains(t, line, strings.Repeat("s", 40))
	require.NotContains(t, line, "abcdefghijklmnop")
}

func TestDotEnv(t *testing.T) {
	t.Parallel()
	vals, err := ReadDotEnv(strings.NewReader("# comment\nexport PORT=9000\nSECRET_KEY=\"" + strings.Repeat("k", 32) + "\"\n\n"))
	require.NoError(t, err)
	require.Equal(t, "9000", vals["PORT"])
	require.Equal(t, strings.Repeat("k", 32), vals["SECRET_KEY"])
	_, err = ReadDotEnv(strings.NewReader("NOEQUALS\n"))
	require.ErrorContains(t, err, "line 1")
}

// TestREADMEDocumentsEveryVariable keeps the README's configuration table true.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, v := range Vars {
		require.Contains(t, string(readme), "`"+v.Name+"`", "README.md must document %s", v.Name)
	}
}

func TestMonitoringReadOnlyInProduction(t *testing.T) {
	t.Parallel()
	secret := "0123456789abcdef0123456789abcdef"
	for name, tt := range map[string]struct {
		env  map[string]string
		want bool
	}{
		"development, unset":        {map[string]string{}, false},
		"production, unset":         {map[string]string{"APP_ENV": "production", "SECRET_KEY": secret}, true},
		"production, asked to edit": {map[string]string{"APP_ENV": "production", "SECRET_KEY": secret, "MONITORING_READ_ONLY": "false"}, false},
		"development, asked":        {map[string]string{"MONITORING_READ_ONLY": "true"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(tt.env))
			require.NoError(t, err)
			require.Equal(t, tt.want, c.MonitoringReadOnly)
		})
	}
}

func TestAuthFailLimitDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil))
	require.NoError(t, err)
	require.Equal(t, 5.0, c.AuthFailRate)
	require.Equal(t, 20, c.AuthFailBurst)
	_, err = Load(env(map[string]string{"AUTH_FAIL_RATE": "-1"}))
	require.ErrorContains(t, err, "AUTH_FAIL_RATE")
}

// API_KEYS entries may list scopes (name:key:predict+jobs); a bad one is an error naming
// API_KEYS and the entry's position, never the key.
func TestAPIKeysScopes(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"API_KEYS": "ops:0123456789abcdef0123:predict+jobs,0123456789abcdef0124,:0123456789abcdef0125:admin"}))
	require.NoError(t, err)
	require.Len(t, c.APIKeys, 3)
	_, err = Load(env(map[string]string{"API_KEYS": "ops:0123456789abcdef0123:predict+jobs+superuser"}))
	require.ErrorContains(t, err, `API_KEYS: entry 1: unknown scope "superuser"`)
	require.NotContains(t, err.Error(), "0123456789abcdef0123")
}

// API_KEYS entries may carry attributes after the scopes, joined by commas like the entries
// themselves: the items that continue an entry's attributes are grouped back into it, and a
// bad attribute is an error naming it and the entry's position.
func TestAPIKeysAttributes(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"API_KEYS": "ops:0123456789abcdef0123:predict+jobs:class=bulk,weight=2,max_pending_rows=1000000,max_queued_jobs=10,0123456789abcdef0124,b:0123456789abcdef0125::weight=3"}))
	require.NoError(t, err)
	require.Equal(t, []string{
		"ops:0123456789abcdef0123:predict+jobs:class=bulk,weight=2,max_pending_rows=1000000,max_queued_jobs=10",
		"0123456789abcdef0124",
		"b:0123456789abcdef0125::weight=3",
	}, c.APIKeys)
	for entries, want := range map[string]string{
		"a:0123456789abcdef0124,ops:0123456789abcdef0123:predict:class=bulk,priority=1": `API_KEYS: entry 2: unknown attribute "priority"`,
		"ops:0123456789abcdef0123:predict:class=batch":                                  `API_KEYS: entry 1: attribute class: "batch" is not interactive or bulk`,
		"ops:0123456789abcdef0123:predict:weight=0":                                     "API_KEYS: entry 1: attribute weight: 0 is not in 1..1000",
		"ops:0123456789abcdef0123:predict:max_queued_jobs=ten":                          `API_KEYS: entry 1: attribute max_queued_jobs: "ten" is not a whole number`,
	} {
		_, err = Load(env(map[string]string{"API_KEYS": entries}))
		require.ErrorContains(t, err, want, entries)
		require.NotContains(t, err.Error(), "0123456789abcdef0123")
	}
}
