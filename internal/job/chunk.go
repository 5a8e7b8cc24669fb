package job

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Encodings of a chunk's rows (job_chunks.encoding).
const (
	// encodingFloat64: rows × d little-endian float64s.
	encodingFloat64 = 0
	// encodingDecimal: uvarint d, then each row as a byte k and, when k <= maxDecimalScale,
	// d zigzag varints m, the numbers being float64(m) / 10^k; when k == rawRow, d
	// little-endian float64s. Numbers as clients write them (0.0200, 17, -3.5) take 1 to 3
	// bytes instead of 8, so that a job's input costs Postgres a quarter of the writes.
	encodingDecimal = 1
)

const (
	maxDecimalScale = 22 // 10^22 is the largest power of ten a float64 holds exactly
	rawRow          = 0xff
)

// appendDecimalRow appends row x to b in encodingDecimal, at scale *k (the previous row's:
// rows of one job tend to share it) when it gives back every number of x bit for bit, else
// at the smallest scale up to 8 that does, else raw; it sets *k to the scale used.
//
// A number f is encoded as m at scale k only when float64(m) / 10^k, computed as
// decodeChunk does, is f itself, so that decoding is exact by construction.
func appendDecimalRow(b []byte, x []float64, k *int) []byte {
	if !fitsScale(x, *k) {
		*k = rawRow
		for s := 0; s <= 8; s++ { // more decimals than 8 are rare: those rows go raw
			if fitsScale(x, s) {
				*k = s
				break
			}
		}
	}
	b = append(b, byte(*k))
	if *k == rawRow {
		for _, f := range x {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
		return b
	}
	p := pow10[*k]
	for _, f := range x {
		b = binary.AppendVarint(b, int64(math.Round(f*p)))
	}
	return b
}

// fitsScale reports whether every number of x is float64(m) / 10^k for an integer m with
// |m| < 2^53. A negative zero never is (m = 0 decodes as +0).
func fitsScale(x []float64, k int) bool {
	if k > maxDecimalScale {
		return false
	}
	p := pow10[k]
	for _, f := range x {
		t := math.Round(f * p)
		if !(math.Abs(t) < 1<<53) || math.Float64bits(float64(int64(t))/p) != math.Float64bits(f) {
			return false
		}
	}
	return true
}

// decodeChunk unpacks a chunk's rows.
func decodeChunk(b []byte, rows, encoding int) ([][]float64, error) {
	switch encoding {
	case encodingFloat64:
		if rows <= 0 || len(b)%(8*rows) != 0 {
			return nil, fmt.Errorf("chunk of %d bytes does not hold %d rows", len(b), rows)
		}
		d := len(b) / 8 / rows
		flat := make([]float64, rows*d)
		for i := range flat {
			flat[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[i*8:]))
		}
		return splitRows(flat, rows, d), nil
	case encodingDecimal:
		d, n := binary.Uvarint(b)
		if n <= 0 || rows <= 0 || d == 0 || d > uint64(len(b)) {
			return nil, fmt.Errorf("chunk of %d bytes: bad header", len(b))
		}
		b = b[n:]
		flat := make([]float64, rows*int(d))
		out := flat
		for r := range rows {
			if len(b) == 0 {
				return nil, fmt.Errorf("chunk ends at row %d of %d", r, rows)
			}
			k := int(b[0])
			b = b[1:]
			row := out[:d]
			out = out[d:]
			switch {
			case k == rawRow:
				if len(b) < 8*len(row) {
					return nil, fmt.Errorf("chunk ends in row %d", r)
				}
				for i := range row {
					row[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[i*8:]))
				}
				b = b[8*len(row):]
			case k <= maxDecimalScale:
				p := pow10[k]
				for i := range row {
					m, n := binary.Varint(b)
					if n <= 0 {
						return nil, fmt.Errorf("chunk ends in row %d", r)
					}
					row[i] = float64(m) / p
					b = b[n:]
				}
			default:
				return nil, fmt.Errorf("row %d: bad scale %d", r, k)
			}
		}
		if len(b) != 0 {
			return nil, fmt.Errorf("chunk has %d bytes after its %d rows", len(b), rows)
		}
		return splitRows(flat, rows, int(d)), nil
	}
	return nil, fmt.Errorf("unknown chunk encoding %d", encoding)
}

// splitRows slices flat into rows of d. Each row keeps the capacity running on to the end
// of flat: that is how inference.Model.PredictBatch knows the rows are one matrix, which it
// multiplies in one product instead of copying them together first. Nothing appends to a
// row.
func splitRows(flat []float64, rows, d int) [][]float64 {
	out := make([][]float64, rows)
	for i := range out {
		out[i] = flat[i*d : (i+1)*d]
	}
	return out
}
