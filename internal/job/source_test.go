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

	"github.com/stretchr/testify/require"
)

// readBareArrays reads NDJSON bare-array lines of the numbers nums, 50 to a line, and checks
// that every number reads as strconv.ParseFloat reads it, bit for bit (the sign of zero
// included), and that a line holding a number ParseFloat refuses is a row error.
func readBareArrays(t *testing.T, nums []string) {
	t.Helper()
	var body strings.Builder
	var lines [][]string
	for lo := 0; lo < len(nums); lo += 50 {
		line := nums[lo:min(lo+50, len(nums))]
		lines = append(lines, line)
		body.WriteString("[" + strings.Join(line, ",") + "]\n")
	}
	src := NewNDJSONSource(strings.NewReader(body.String()))
	for i, line := range lines {
		x, err := src.Next()
		refused := -1
		for j, s := range line {
			if _, perr := strconv.ParseFloat(s, 64); perr != nil {
				refused = j
				break
			}
		}
		if refused >= 0 {
			var re *RowError
			require.ErrorAs(t, err, &re, "line %d: %q refused by ParseFloat", i+1, line[refused])
			require.Equal(t, i+1, re.Row)
			continue
		}
		require.NoError(t, err, "line %d", i+1)
		require.Len(t, x, len(line))
		for j, s := range line {
			want, _ := strconv.ParseFloat(s, 64)
			require.Equal(t, math.Float64bits(want), math.Float64bits(x[j]), "%q: got %v, want %v", s, x[j], want)
		}
	}
	_, err := src.Next()
	require.ErrorIs(t, err, io.EOF)
}

func TestNDJSONNumbersReadAsParseFloat(t *testing.T) {
	t.Parallel()
	nums := []string{
		"0", "-0", "0.0", "-0.000", "0e5", "-0E-5", "0e999999", "1", "-1", "0.0200", "0.0371", "123.456", "1e22", "1e23",
		"9007199254740991", "9007199254740992", "9007199254740993", "18446744073709551615", "18446744073709551616",
		"1234567890123456789", "12345678901234567890", "0.1", "0.3", "2.2250738585072014e-308", "4.9e-324", "5e-324",
		"2e-324", "1e-400", "1.7976931348623157e308", "1.7976931348623158e308", "1e308",
		"1e-22", "1e-23", "123456789012345e-22", "4503599627370497e22", "0.000000000000000000000000000001",
		"100000000000000000000000", "1.00000000000000011102230246251565404236316680908203125",
		"1.00000000000000011102230246251565404236316680908203124", "3e0", "3E+00", "7e-0010",
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
		nums = append(nums, b.String())
	}
	// Shortest and fixed formats of random float64s, which must come back unchanged.
	for range 100_000 {
		f := math.Float64frombits(rng.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		nums = append(nums, strconv.FormatFloat(f, 'g', -1, 64), strconv.FormatFloat(f, 'f', rng.IntN(8), 64))
	}
	readBareArrays(t, nums)
	// Numbers out of float64's range make their line a row error.
	readBareArrays(t, []string{"1", "1e309", "2"})
	readBareArrays(t, []string{"-1e400000"})
}

func TestNDJSONBareArrays(t *testing.T) {
	t.Parallel()
	src := NewNDJSONSource(strings.NewReader("[ 1 , 2 ]\n[\t1\r,2]\n[]\n[ ]\n[0.5,-2,3e2,4E-2,5.25e+1]\n"))
	for _, want := range [][]float64{{1, 2}, {1, 2}, {}, {}, {0.5, -2, 300, 0.04, 52.5}} {
		x, err := src.Next()
		require.NoError(t, err)
		require.Equal(t, want, x)
	}
	for _, line := range []string{
		"[1,]", "[,1]", "[1 2]", "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[1e+]", "[-]", "[--1]", "[0x10]",
		"[1]]", "[1] x", "[[1]]", "[null]", "[\"1\"]", "[true]", "[1e309]", "[NaN]", "[Infinity]", "[1", "[1,2",
		"[1/*c*/]", "[１]",
	} {
		src := NewNDJSONSource(strings.NewReader("[1]\n" + line + "\n"))
		_, err := src.Next()
		require.NoError(t, err)
		_, err = src.Next()
		var re *RowError
		require.ErrorAs(t, err, &re, "%q", line)
		require.Equal(t, 2, re.Row, "%q", line)
	}
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
