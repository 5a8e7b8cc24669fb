package prediction_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
)

// BenchmarkInsert compares the write paths of Store.Insert by batch size, one batch per
// iteration, and reports rows per second: the direct COPY (the default) and the two
// conflict-handling paths alone. It chose DefaultCopyThreshold. For what each costs Postgres,
// see BenchmarkInsertCPU.
//
//	go test -run '^$' -bench 'BenchmarkInsert$' -benchtime 2s ./internal/prediction/
func BenchmarkInsert(b *testing.B) {
	pool := pgtest.New(b)
	paths := []struct {
		name string
		opts []prediction.StoreOption
	}{
		{"direct", nil},
		{"unnest", []prediction.StoreOption{prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1 << 30)}},
		{"copy", []prediction.StoreOption{prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1)}},
	}
	seq := 0
	for _, size := range []int{1, 10, 50, 100, 200, 500, 2000} {
		for _, p := range paths {
			b.Run(p.name+"/rows="+strconv.Itoa(size), func(b *testing.B) {
				store := prediction.NewStore(pool, p.opts...)
				ctx := context.Background()
				batches := make([][]prediction.Record, b.N)
				for i := range batches {
					seq++
					batches[i] = storeRecords("b"+strconv.Itoa(seq), size)
				}
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					if _, err := store.Insert(ctx, batches[i]); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
			})
		}
	}
}

// BenchmarkInsertCPU measures what a batch of new predictions costs Postgres: the CPU time
// (user + system, from /proc/<pid>/stat, 10 ms ticks) of the one backend that serves the store
// (a pool of one connection), per row, next to the wall time per row and the CPU time of the
// benchmark process per row (the Go side). Each op is one batch of fresh sonar-like records
// (the api's and the persist worker's batches are 20-30); the table is emptied before each
// run. Each record has a server id (UUIDv7, the primary key), and a request id that is a UUIDv7
// too, as the api makes them (time-ordered); PREDSTORE_IDS=v4 makes the request ids random, as
// clients' own X-Request-IDs may be (they land at random places of the (user_id, request_id)
// index). Variants:
//
//   - copy: Insert as it is, the direct COPY (copyDirect, pgx's CopyFrom);
//   - unnest, tempcopy: the conflict-handling paths alone, as Insert wrote before the direct
//     COPY (INSERT … SELECT FROM unnest … ON CONFLICT, and COPY into a temporary table then
//     INSERT … SELECT … ON CONFLICT).
//
// The machine is shared and noisy, so the variants alternate within each round (A B C D,
// A B C D, …; PREDSTORE_ROUNDS rounds, default 5): compare the medians over the rounds. Use a
// -benchtime of about 100,000 rows a run:
//
//	go test -run '^$' -bench 'BenchmarkInsertCPU/^rows=26$/' -benchtime 3850x -benchmem ./internal/prediction/
//	go test -run '^$' -bench 'BenchmarkInsertCPU/^rows=100$/' -benchtime 1000x -benchmem ./internal/prediction/
//
// (500x for rows=200, 200x for 500, 50x for 2000.)
func BenchmarkInsertCPU(b *testing.B) {
	benchInsertCPU(b, false)
}

// BenchmarkInsertReplayCPU is BenchmarkInsertCPU for replayed batches: each op inserts again
// a batch that is stored already (Insert returns 0), so the direct COPY fails and the
// conflict-handling path runs after it. Variants: copy, Insert as it is; unnest, the
// conflict-handling path alone.
//
//	go test -run '^$' -bench 'BenchmarkInsertReplayCPU/^rows=26$/' -benchtime 3850x -benchmem ./internal/prediction/
func BenchmarkInsertReplayCPU(b *testing.B) {
	benchInsertCPU(b, true)
}

func benchInsertCPU(b *testing.B, replay bool) {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, pgtest.NewURL(b), 1)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var pid int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		b.Fatal(err)
	}
	rounds := 5
	if s := os.Getenv("PREDSTORE_ROUNDS"); s != "" {
		if rounds, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	direct := prediction.NewStore(pool)
	unnest := prediction.NewStore(pool, prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1<<30))
	tempcopy := prediction.NewStore(pool, prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1))
	type variant struct {
		name   string
		insert func(context.Context, []prediction.Record) (int64, error)
	}
	variants := []variant{{"unnest", unnest.Insert}, {"copy", direct.Insert}}
	if !replay {
		variants = append(variants, variant{"tempcopy", tempcopy.Insert})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	feats := sonarFeatures(rng, 4096)
	randomIDs := os.Getenv("PREDSTORE_IDS") == "v4"
	for _, size := range []int{26, 100, 200, 500, 2000} {
		b.Run("rows="+strconv.Itoa(size), func(b *testing.B) {
			for round := 1; round <= rounds; round++ {
				b.Run("round="+strconv.Itoa(round), func(b *testing.B) {
					for _, v := range variants {
						b.Run(v.name, func(b *testing.B) {
							if _, err := pool.Exec(ctx, "TRUNCATE predictions"); err != nil {
								b.Fatal(err)
							}
							// Request ids are drawn up front and a batch's records are made in
							// a reused slice, so that the loop allocates only what Insert does.
							ids := make([]string, b.N*size)
							sids := make([]uuid.UUID, b.N*size) // the server's ids, UUIDv7 as the api makes them
							for i := range ids {
								sids[i] = uuid.Must(uuid.NewV7())
								if randomIDs {
									ids[i] = uuidV4(rng)
								} else {
									ids[i] = uuid.Must(uuid.NewV7()).String()
								}
							}
							batch := make([]prediction.Record, size)
							at := time.Now()
							fill := func(i int) {
								for j := range batch {
									k := i*size + j
									batch[j] = sonarRecord(rng, feats, ids[k], sids[k], at.Add(time.Duration(k)*time.Microsecond))
								}
							}
							want := int64(size)
							if replay {
								want = 0
								for i := range b.N {
									fill(i)
									if _, err := direct.Insert(ctx, batch); err != nil {
										b.Fatal(err)
									}
								}
							}
							b.ReportAllocs()
							pg0, err := backendCPU(pid)
							if err != nil {
								b.Fatal(err)
							}
							self0 := selfCPU()
							b.ResetTimer()
							start := time.Now()
							for i := range b.N {
								fill(i)
								n, err := v.insert(ctx, batch)
								if err != nil {
									b.Fatal(err)
								}
								if n != want {
									b.Fatalf("inserted %d rows of %d, want %d", n, size, want)
								}
							}
							wall := time.Since(start)
							b.StopTimer()
							self := selfCPU() - self0
							pg, err := backendCPU(pid)
							if err != nil {
								b.Fatal(err)
							}
							var pid2 int
							if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil || pid2 != pid {
								b.Fatalf("the backend changed: %d, %v", pid2, err)
							}
							rows := float64(b.N * size)
							b.ReportMetric(float64((pg-pg0).Microseconds())/rows, "pg-µs/row")
							b.ReportMetric(float64(wall.Microseconds())/rows, "wall-µs/row")
							b.ReportMetric(float64(self.Microseconds())/rows, "go-µs/row")
						})
					}
				})
			}
		})
	}
}

// sonarFeatures returns n feature vectors like the sonar data set's: 60 numbers of 4 decimals
// in [0, 1].
func sonarFeatures(rng *rand.Rand, n int) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, 60)
		for j := range out[i] {
			out[i][j] = float64(rng.IntN(10001)) / 10000
		}
	}
	return out
}

// uuidV4 formats a random (version 4) uuid drawn from rng.
func uuidV4(rng *rand.Rand) string {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rng.Uint64())
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80
	return u.String()
}

// sonarRecord returns a record as the persist worker sees one: sonar-like features (one of
// feats), its server id sid, uuid request id, an API key's user id, v2.0.0.
func sonarRecord(rng *rand.Rand, feats [][]float64, id string, sid uuid.UUID, at time.Time) prediction.Record {
	p := float64(rng.IntN(10001)) / 10000
	class := prediction.ClassNegative
	if p > 0.5 {
		class = prediction.ClassPositive
	}
	return prediction.Record{
		ID: sid, RequestID: id, UserID: "17", Features: feats[rng.IntN(len(feats))],
		Prediction: p, Confidence: max(p, 1-p), PredictionClass: class, ModelVersion: "v2.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.6, Cached: rng.IntN(10) == 0,
		LatencyMS: float64(rng.IntN(5000)) / 1000, CreatedAt: at,
	}
}

// backendCPU returns the CPU time (user + system) that the Postgres backend pid has used, from
// /proc/<pid>/stat (clock ticks of 10 ms).
func backendCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // f[0] is field 3, state
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// selfCPU returns the CPU time (user + system) of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
