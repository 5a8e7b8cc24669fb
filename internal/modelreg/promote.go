package modelreg

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/postgres"
)

// ReloadChannel is the Redis pub/sub channel on which a promotion or a new artifact is
// announced to every api and worker process.
const ReloadChannel = "predq:models:reload"

var aliasRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// ErrInvalidAlias: an alias name that is not [a-z][a-z0-9_-]{0,62}.
var ErrInvalidAlias = errors.New("invalid alias")

// Promote points alias at version in Postgres (pinning it: "latest" then no longer follows
// the highest version until unpinned) and reloads this process. Other processes learn of it
// through Announce (pub/sub) or their periodic Refresh. Errors: ErrNotFound (the version is
// not registered), ErrInvalidAlias, ErrNoPostgres.
func (r *Registry) Promote(ctx context.Context, version, alias string) error {
	if r.pool == nil {
		return ErrNoPostgres
	}
	if !aliasRE.MatchString(alias) {
		return fmt.Errorf("%w: %q", ErrInvalidAlias, alias)
	}
	err := postgres.WithTx(ctx, r.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM model_versions WHERE version = $1)`, version).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("%w: %s", ErrNotFound, version)
		}
		_, err := tx.Exec(ctx, `INSERT INTO model_aliases (alias, version, pinned) VALUES ($1, $2, true)
			ON CONFLICT (alias) DO UPDATE SET version = EXCLUDED.version, pinned = true, updated_at = now()`, alias, version)
		return err
	})
	if err != nil {
		return fmt.Errorf("promote %s to %s: %w", version, alias, err)
	}
	r.logger.InfoContext(ctx, "model promoted", "version", version, "alias", alias)
	return r.Refresh(ctx)
}

// Refresh brings this process up to date with Postgres and MODEL_PATH: it loads artifacts
// that appeared (or changed) and re-reads the aliases. A request that already resolved a
// model keeps it: the snapshot is swapped whole.
func (r *Registry) Refresh(ctx context.Context) error {
	return r.Load(ctx)
}

// Announce tells every process to Refresh.
func Announce(ctx context.Context, rdb redis.UniversalClient, reason string) error {
	return rdb.Publish(ctx, ReloadChannel, reason).Err()
}

// Watch refreshes the registry whenever a reload is announced, and every interval in any
// case (the fallback when a message is missed or Redis is down). It returns when ctx ends.
func (r *Registry) Watch(ctx context.Context, rdb redis.UniversalClient, interval time.Duration) {
	var msgs <-chan *redis.Message
	if rdb != nil {
		sub := rdb.Subscribe(ctx, ReloadChannel)
		defer sub.Close()
		msgs = sub.Channel()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	refresh := func(why string) {
		before := r.aliasesKey()
		if err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
			r.logger.WarnContext(ctx, "model refresh failed", "trigger", why, "error", err)
			return
		}
		if after := r.aliasesKey(); after != before {
			r.logger.InfoContext(ctx, "models reloaded", "trigger", why, "aliases", after)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			refresh("announce:" + m.Payload)
		case <-t.C:
			refresh("interval")
		}
	}
}

func (r *Registry) aliasesKey() string {
	s := r.snap.Load()
	return fmt.Sprint(s.aliases, sortedKeys(s.models))
}
