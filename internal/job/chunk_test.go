package job

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// encodeRows packs rows as chunkPacker does.
func encodeRows(rows [][]float64) []byte {
	b := binary.AppendUvarint(nil, uint64(len(rows[0])))
	k := 0
	for _, x := range rows {
		b = appendDecimalRow(b, x, &k)
	}
	return b
}

// requireSameBits checks that got holds exactly the numbers of want, bit for bit.
func requireSameBits(t *testing.T, want, got [][]float64) {
	t.Helper()
	require.Len(t, got, len(want))
	for r := range want {
		require.Len(t, got[r], len(want[r]), "row %d", r)
		for i := range want[r] {
			require.Equal(t, math.Float64bits(want[r][i]), math.Float64bits(got[r][i]), "row %d, number %d: want %v, got %v", r, i, want[r][i], got[r][i])
		}
	}
}

func TestDecimalChunksGiveBackEveryNumber(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	// Numbers as clients write them, parsed as the sources parse them.
	decimal := func() float64 {
		s := strconv.FormatFloat((rng.Float64()*2-1)*math.Pow(10, float64(rng.IntN(8)-3)), 'f', rng.IntN(12), 64)
		f, err := strconv.ParseFloat(s, 64)
		require.NoError(t, err)
		return f
	}
	special := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 0.02, 1e-7, 123456789.123, 1e22, 1e300, -1e-300,
		4.9e-324, math.MaxFloat64, 1 << 53, 1<<53 + 2, math.Nextafter(0.1, 1), math.Pi, 1000, -1000}
	cases := map[string][][]float64{}
	sonar := make([][]float64, 300)
	for r := range sonar {
		sonar[r] = make([]float64, 60)
		for i := range sonar[r] {
			sonar[r][i] = float64(rng.IntN(10000)) / 1e4 // 0.0000 … 0.9999, as in the sonar data
		}
	}
	cases["sonar"] = sonar
	mixed := make([][]float64, 500)
	for r := range mixed {
		mixed[r] = make([]float64, 7)
		for i := range mixed[r] {
			switch rng.IntN(4) {
			case 0:
				mixed[r][i] = special[rng.IntN(len(special))]
			case 1:
				mixed[r][i] = math.Float64frombits(rng.Uint64())
				if math.IsNaN(mixed[r][i]) || math.IsInf(mixed[r][i], 0) {
					mixed[r][i] = 0.5
				}
			default:
				mixed[r][i] = decimal()
			}
		}
	}
	cases["mixed"] = mixed
	cases["special"] = [][]float64{special, special}
	cases["one number"] = [][]float64{{42}}
	cases["negative zero among decimals"] = [][]float64{{0.5, math.Copysign(0, -1), 0.25}, {math.Copysign(0, -1), 0, 1}}
	for name, rows := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeChunk(encodeRows(rows), len(rows), encodingDecimal)
			require.NoError(t, err)
			requireSameBits(t, rows, got)
		})
	}
	t.Run("sonar numbers take a quarter of float64s", func(t *testing.T) {
		t.Parallel()
		require.Less(t, len(encodeRows(sonar)), 8*60*len(sonar)/3)
	})
}

func TestFloat64ChunksStillDecode(t *testing.T) {
	t.Parallel()
	rows := [][]float64{{1.5, -2}, {math.Copysign(0, -1), 1e300}}
	var b []byte
	for _, x := range rows {
		for _, f := range x {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
	}
	got, err := decodeChunk(b, 2, encodingFloat64)
	require.NoError(t, err)
	requireSameBits(t, rows, got)
}

func TestBrokenChunksAreErrors(t *testing.T) {
	t.Parallel()
	good := encodeRows([][]float64{{0.25, 3}, {1e-9, math.Pi}})
	for name, c := range map[string]struct {
		b        []byte
		rows     int
		encoding int
	}{
		"truncated":          {good[:len(good)-1], 2, encodingDecimal},
		"trailing bytes":     {append(append([]byte{}, good...), 0), 2, encodingDecimal},
		"more rows":          {good, 3, encodingDecimal},
		"bad scale":          {[]byte{1, 23, 2}, 1, encodingDecimal},
		"empty":              {nil, 1, encodingDecimal},
		"unknown encoding":   {good, 2, 7},
		"float64 bad length": {make([]byte, 12), 1, encodingFloat64},
	} {
		_, err := decodeChunk(c.b, c.rows, c.encoding)
		require.Error(t, err, name)
	}
}

// Decoded rows are one matrix (each row's capacity runs on through the rows after it), so
// PredictBatch multiplies them in one product rather than copying them together.
func TestDecodedRowsShareOneBuffer(t *testing.T) {
	t.Parallel()
	rows := [][]float64{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}
	got, err := decodeChunk(encodeRows(rows), len(rows), encodingDecimal)
	require.NoError(t, err)
	flat := got[0][:len(rows)*3]
	for i := range got {
		require.Same(t, &flat[i*3], &got[i][0], "row %d", i)
	}
}
