package prediction

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/predq/predq/internal/inference"
)

// cacheKeyStreamed is CacheKey as it was first written, each part written to the hash on its
// own: the keys already in Redis were made by it, so CacheKey must keep making the same.
func cacheKeyStreamed(m *inference.Model, prep string, features []float64) string {
	h := sha256.New()
	var buf [8]byte
	h.Write([]byte(m.Checksum))
	h.Write([]byte{0})
	h.Write([]byte(prep))
	h.Write([]byte{0})
	for _, x := range features {
		if x == 0 {
			x = 0
		}
		binary.LittleEndian.PutUint64(buf[:], math.Float64bits(x))
		h.Write(buf[:])
	}
	return "predq:pred:" + m.Version + ":" + prep + ":" + hex.EncodeToString(h.Sum(nil)[:20])
}

func TestCacheKeyKeepsItsKeys(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	models := []*inference.Model{
		{Version: "v1.0.0", Checksum: "sha256:" + strings.Repeat("ab", 32)},
		{Version: "v2.10.3", Checksum: "sha256:" + strings.Repeat("0f", 32)},
		{Version: "v" + strings.Repeat("9", 60) + ".0.0", Checksum: strings.Repeat("c", 300)}, // past the stack buffers
	}
	for i := range 3000 {
		m := models[i%len(models)]
		prep := []string{"standard", "minmax", "robust"}[i%3]
		fs := make([]float64, 1+r.IntN(MaxFeatures))
		for j := range fs {
			switch r.IntN(10) {
			case 0:
				fs[j] = math.Copysign(0, -1)
			case 1:
				fs[j] = 0
			default:
				fs[j] = (r.Float64()*2 - 1) * MaxAbsFeature
			}
		}
		got := CacheKey(m, prep, fs)
		if want := cacheKeyStreamed(m, prep, fs); got != want {
			t.Fatalf("input %d: %s, want %s", i, got, want)
		}
	}
	// -0 and +0 make one key.
	m := models[0]
	if CacheKey(m, "standard", []float64{math.Copysign(0, -1), 1}) != CacheKey(m, "standard", []float64{0, 1}) {
		t.Fatal("-0 and +0 make different keys")
	}
}

func BenchmarkCacheKey(b *testing.B) {
	m := &inference.Model{Version: "v2.0.0", Checksum: "sha256:" + strings.Repeat("ab", 32)}
	fs := make([]float64, 60)
	for i := range fs {
		fs[i] = float64(i) / 61
	}
	b.Run("one buffer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = CacheKey(m, "standard", fs)
		}
	})
	b.Run("streamed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = cacheKeyStreamed(m, "standard", fs)
		}
	})
}
