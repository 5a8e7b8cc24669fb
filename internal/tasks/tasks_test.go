package tasks_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
)

func TestParseQueues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[string]int
		wantErr string
	}{
		{in: "critical=6,default=3,batch=2,low=1", want: tasks.DefaultQueues()},
		{in: " low=1 , batch=5,default=5, critical=10,", want: map[string]int{"critical": 10, "default": 5, "batch": 5, "low": 1}},
		{in: "critical=6,default=3,batch=2", wantErr: "queue low is missing"},
		{in: "critical=6,default=3,batch=2,low=0", wantErr: "weight of low"},
		{in: "critical=6,default=3,batch=2,low=x", wantErr: "weight of low"},
		{in: "critical=6,default=3,batch=2,low=1,bulk=1", wantErr: `unknown queue "bulk"`},
		{in: "critical,default=3,batch=2,low=1", wantErr: "not name=weight"},
		{in: "critical=6,critical=3,default=3,batch=2,low=1", wantErr: "listed twice"},
		{in: "", wantErr: "missing"},
	}
	for _, tt := range tests {
		got, err := tasks.ParseQueues(tt.in)
		if tt.wantErr != "" {
			require.ErrorContains(t, err, tt.wantErr, "input %q", tt.in)
			continue
		}
		require.NoError(t, err, "input %q", tt.in)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseQueues(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestRedisConnOpt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		want asynq.RedisConnOpt
	}{
		{"redis://:pw@h1:6380/2", asynq.RedisClientOpt{Addr: "h1:6380", Password: "pw", DB: 2, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}},
		{"redis-sentinel://:pw@s1:26379,s2:26379/1?master=mymaster", asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelPassword: "pw", Password: "pw", DB: 1, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}},
	}
	for _, tt := range tests {
		o, err := redisdb.ParseURL(tt.url)
		require.NoError(t, err)
		if diff := cmp.Diff(tt.want, tasks.RedisConnOpt(o, 500*time.Millisecond)); diff != "" {
			t.Errorf("RedisConnOpt(%q) (-want +got):\n%s", tt.url, diff)
		}
	}
	o, err := redisdb.ParseURL("redis-cluster://c1:7000,c2:7001")
	require.NoError(t, err)
	co := tasks.RedisConnOpt(o, 500*time.Millisecond).(tasks.ClusterConnOpt).Options
	require.Equal(t, []string{"c1:7000", "c2:7001"}, co.Addrs)
	require.Equal(t, 500*time.Millisecond, co.ReadTimeout)
	require.Equal(t, redisdb.ClusterReloadInterval, co.ClusterStateReloadInterval)
	o, err = redisdb.ParseURL("rediss://h:1/0")
	require.NoError(t, err)
	require.NotNil(t, tasks.RedisConnOpt(o, 0).(asynq.RedisClientOpt).TLSConfig)
}

func TestParsePersistPayload(t *testing.T) {
	t.Parallel()
	r0, r1 := record("p", 0, 0.9), record("p", 1, 0.6)

	t.Run("ArrayOfRecords", func(t *testing.T) {
		task, err := tasks.NewPredictionPersistTask([]prediction.Record{r0, r1}, nil)
		require.NoError(t, err)
		got, err := tasks.ParsePersistPayload(task.Payload())
		require.NoError(t, err)
		require.Equal(t, []prediction.Record{r0, r1}, got)
	})

	t.Run("FeaturesAsNumbersDecode", func(t *testing.T) {
		b, _ := json.Marshal([]prediction.Record{r0, r1})
		got, err := tasks.ParsePersistPayload(b)
		require.NoError(t, err)
		require.Equal(t, []prediction.Record{r0, r1}, got)
	})

	t.Run("FeaturesTravelAsExactNumbers", func(t *testing.T) {
		r := r0
		r.Features = []float64{0, math.Copysign(0, -1), 5e-324, -math.MaxFloat64, 0.1, 1.0 / 3, -999.999999999}
		task, err := tasks.NewPredictionPersistTask([]prediction.Record{r}, nil)
		require.NoError(t, err)
		var raw []map[string]any
		require.NoError(t, json.Unmarshal(task.Payload(), &raw))
		require.IsType(t, []any{}, raw[0]["features"], "features are a JSON array of numbers: %s", task.Payload())
		require.Equal(t, r.RequestID, raw[0]["request_id"])
		got, err := tasks.ParsePersistPayload(task.Payload())
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.Len(t, got[0].Features, len(r.Features))
		for i, f := range r.Features {
			require.Equal(t, math.Float64bits(f), math.Float64bits(got[0].Features[i]), "feature %d", i)
		}
	})

	t.Run("BinaryFeaturesOfEarlierPayloadsDecode", func(t *testing.T) {
		var bin []byte
		for _, f := range r0.Features {
			bin = binary.LittleEndian.AppendUint64(bin, math.Float64bits(f))
		}
		raw, err := json.Marshal([]prediction.Record{r0})
		require.NoError(t, err)
		var m []map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		m[0]["features"] = base64.StdEncoding.EncodeToString(bin)
		p, err := json.Marshal(m)
		require.NoError(t, err)
		got, err := tasks.ParsePersistPayload(p)
		require.NoError(t, err)
		require.Equal(t, []prediction.Record{r0}, got)
	})

	t.Run("EscapedBinaryFeaturesDecode", func(t *testing.T) {
		// "AAAAAAAAAAA=" (eight zero bytes) with its first letter escaped.
		p := `[{"request_id":"x","features":"\u0041AAAAAAAAAA=","model_version":"v1.0.0","prediction_class":"positive"}]`
		got, err := tasks.ParsePersistPayload([]byte(p))
		require.NoError(t, err)
		require.Equal(t, []float64{0}, got[0].Features)
	})

	t.Run("BadBinaryFeaturesAreErrBadPayload", func(t *testing.T) {
		nanBits := base64.StdEncoding.EncodeToString(binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN())))
		for _, f := range []string{`"not base64!"`, `"AAAA"`, `"` + nanBits + `"`, `"AAAAAAAAAAAAAA=="`} {
			p := `[{"request_id":"x","features":` + f + `,"model_version":"v1.0.0","prediction_class":"positive"}]`
			_, err := tasks.ParsePersistPayload([]byte(p))
			require.ErrorIs(t, err, tasks.ErrBadPayload, "payload %s", p)
		}
	})

	t.Run("GarbageIsErrBadPayload", func(t *testing.T) {
		for _, p := range []string{"", "  ", "nope", "{", "[1,2", `"x"`, "42", `{"request_id":"x"}`} {
			_, err := tasks.ParsePersistPayload([]byte(p))
			require.ErrorIs(t, err, tasks.ErrBadPayload, "payload %q", p)
		}
	})

	t.Run("NaNCannotBeEncoded", func(t *testing.T) {
		bad := r0
		bad.Features = []float64{1, nan()}
		_, err := tasks.NewPredictionPersistTask([]prediction.Record{bad}, nil)
		require.Error(t, err)
	})
}

func nan() float64 {
	var z float64
	return z / z
}

// A task recovered from a dead worker runs again at once; other failures keep asynq's back-off.
func TestRetryDelayOfARecoveredTask(t *testing.T) {
	chunk := asynq.NewTask(tasks.TypeJobChunk, nil)
	require.Equal(t, tasks.LeaseExpiredRetryDelay, tasks.RetryDelay(0, asynq.ErrLeaseExpired, chunk))
	require.GreaterOrEqual(t, tasks.RetryDelay(0, errors.New("boom"), chunk), 15*time.Second, "asynq's default back-off")
}
