// Package migrations embeds the versioned SQL files that create the Postgres schema. They are
// applied in order by postgres.Migrate (goose format: -- +goose Up / Down).
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
