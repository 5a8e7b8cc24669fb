package job

import (
	"encoding/csv"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/strictjson"
)

// checkFastPath checks that parseNumberArray either declines line or returns exactly what
// the strict decoder returns for it.
func checkFastPath(t *testing.T, line string) (fast bool) {
	t.Helper()
	got, ok := parseNumberArray(nil, []byte(line))
	var want []float64
	err := json.Unmarshal([]byte(line), &want, strictjson.Options)
	if !ok {
		return false
	}
	require.NoError(t, err, "fast path accepted %q, which the decoder refuses", line)
	require.Len(t, got, len(want), line)
	for i := range want {
		require.Equal(t, math.Float64bits(want[i]), math.Float64bits(got[i]), "%q: element %d", line, i)
	}
	return true
}

func TestNumberArrayFastPathAgreesWithTheDecoder(t *testing.T) {
	t.Parallel()
	accepted := []string{
		"[1]", "[0]", "[-0]", "[0.5,-2,3e2,4E-2,5.25e+1]", "[ 1 , 2 ]", "[\t1\r\n,2]", "[1e308]", "[4.9e-324]", "[1e-400]",
		"[0.0200,0.0371,0.0428]", "[123456789012345678901234567890]", "[-1000, 1000]",
	}
	for _, line := range accepted {
		require.True(t, checkFastPath(t, line), "fast path declined %q", line)
	}
	declined := []string{
		"[]", "[ ]", "[1,]", "[,1]", "[1 2]", "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[1e+]", "[-]", "[--1]", "[0x10]",
		"[1]]", "[1] x", "[[1]]", "[null]", "[\"1\"]", "[true]", "[1e309]", "[-1e400000]", "[NaN]", "[Infinity]", "[1", "[1,2",
		"[1/*c*/]", "[１]",
	}
	for _, line := range declined {
		require.False(t, checkFastPath(t, line), "fast path accepted %q", line)
	}

	// Random arrays in every float format, with random whitespace.
	rng := rand.New(rand.NewPCG(1, 2))
	space := []string{"", "", " ", "\t", " \r\n "}
	for range 2000 {
		var b strings.Builder
		b.WriteString("[" + space[rng.IntN(len(space))])
		n := 1 + rng.IntN(70)
		for i := range n {
			if i > 0 {
				b.WriteString(space[rng.IntN(len(space))] + "," + space[rng.IntN(len(space))])
			}
			f := (rng.Float64()*2 - 1) * math.Pow(10, float64(rng.IntN(20)-10))
			b.WriteString(strconv.FormatFloat(f, "efgE"[rng.IntN(4)], rng.IntN(20)-1, 64))
		}
		b.WriteString(space[rng.IntN(len(space))] + "]")
		require.True(t, checkFastPath(t, b.String()), "fast path declined %q", b.String())
	}
}

// checkNumber checks that parseNumber returns for s exactly what strconv.ParseFloat returns,
// bit for bit (the sign of zero included), or declines what ParseFloat refuses.
func checkNumber(t *testing.T, s string) {
	t.Helper()
	want, err := strconv.ParseFloat(s, 64)
	got, ok := parseNumber([]byte(s))
	require.Equal(t, err == nil, ok, "%q: ParseFloat error %v", s, err)
	if ok {
		require.Equal(t, math.Float64bits(want), math.Float64bits(got), "%q: got %v, want %v", s, got, want)
	}
}

func TestParseNumberAgreesWithParseFloat(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"0", "-0", "0.0", "-0.000", "0e5", "-0E-5", "0e999999", "1", "-1", "0.0200", "0.0371", "123.456", "1e22", "1e23",
		"9007199254740991", "9007199254740992", "9007199254740993", "18446744073709551615", "18446744073709551616",
		"1234567890123456789", "12345678901234567890", "0.1", "0.3", "2.2250738585072014e-308", "4.9e-324", "5e-324",
		"2e-324", "1e-400", "1.7976931348623157e308", "1.7976931348623158e308", "1e308", "1e309", "-1e309",
		"1e-22", "1e-23", "123456789012345e-22", "4503599627370497e22", "0.000000000000000000000000000001",
		"100000000000000000000000", "1.00000000000000011102230246251565404236316680908203125",
		"1.00000000000000011102230246251565404236316680908203124", "3e0", "3E+00", "7e-0010",
	} {
		checkNumber(t, s)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200_000 {
		var b strings.Builder
		if rng.IntN(2) == 0 {
			b.WriteByte('-')
		}
		if rng.IntN(4) == 0 {
			b.WriteByte('0')
		} else {
			b.WriteByte(byte('1' + rng.IntN(9)))
			for range rng.IntN(22) {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
		}
		if rng.IntN(3) > 0 {
			b.WriteByte('.')
			for range 1 + rng.IntN(22) {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
		}
		if rng.IntN(3) == 0 {
			b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[rng.IntN(5)])
			b.WriteString(strconv.Itoa(rng.IntN(40)))
		}
		checkNumber(t, b.String())
	}
	// Shortest and fixed formats of random float64s, which must come back unchanged.
	for range 100_000 {
		f := math.Float64frombits(rng.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		checkNumber(t, strconv.FormatFloat(f, 'g', -1, 64))
		checkNumber(t, strconv.FormatFloat(f, 'f', rng.IntN(8), 64))
	}
}

func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"0", "-0.0200", "1e22", "9007199254740993", "1.5e-7", "123456789012345678901"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" || numberLen([]byte(s)) != len(s) {
			return // not a JSON number: never handed to parseNumber
		}
		checkNumber(t, s)
	})
}

func TestNDJSONSourceKeepsItsErrors(t *testing.T) {
	t.Parallel()
	src := NewNDJSONSource(strings.NewReader("[1,2]\n\n[1e999]\n[1,null]\n"))
	x, err := src.Next()
	require.NoError(t, err)
	require.Equal(t, []float64{1, 2}, x)
	_, err = src.Next()
	var re *RowError
	require.ErrorAs(t, err, &re)
	require.Equal(t, 3, re.Row)
	require.Contains(t, re.Message, "overflows")
}

// BenchmarkRowSources reads 1,000 sonar rows (rows i mod 208 of data/sonar.csv, their numbers
// as the file writes them) through each source, as a job upload does: NDJSON bare arrays (what
// the bench's 1M-row job sends), NDJSON objects and CSV, in ns per row.
func BenchmarkRowSources(b *testing.B) {
	f, err := os.Open("../../data/sonar.csv")
	if err != nil {
		b.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	var arrays, objects, csvBody strings.Builder
	for i := range n {
		nums := strings.Join(recs[i%len(recs)][:60], ",")
		arrays.WriteString("[" + nums + "]\n")
		objects.WriteString(`{"features":[` + nums + "]}\n")
		csvBody.WriteString(nums + "\n")
	}
	for _, c := range []struct {
		name string
		body string
		src  func(io.Reader) RowSource
	}{
		{"ndjson-arrays", arrays.String(), func(r io.Reader) RowSource { return NewNDJSONSource(r) }},
		{"ndjson-objects", objects.String(), func(r io.Reader) RowSource { return NewNDJSONSource(r) }},
		{"csv", csvBody.String(), func(r io.Reader) RowSource { return NewCSVSource(r) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				src := c.src(strings.NewReader(c.body))
				rows := 0
				for {
					x, err := src.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil || len(x) != 60 {
						b.Fatalf("row %d: %v, %d features", rows+1, err, len(x))
					}
					rows++
				}
				if rows != n {
					b.Fatalf("%d rows, want %d", rows, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}
