package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Float8s is a float8[] query argument that a connection of Open encodes in binary in one
// pass. pgx encodes a []float64 element by element through an interface (each float boxed,
// its type looked up), a large share of the persist worker's CPU for its 60 features a row
// (README Benchmarks). Any connection can take a Float8s (without this codec pgx falls back
// to its slice path); it is sent as NULL when nil.
type Float8s []float64

// registerFloat8s makes c's float8[] codec encode Float8s directly; everything else (other
// values, every decode) goes to the codec pgx registered.
func registerFloat8s(_ context.Context, c *pgx.Conn) error {
	m := c.TypeMap()
	t, ok := m.TypeForOID(pgtype.Float8ArrayOID)
	if !ok {
		return fmt.Errorf("postgres: no float8[] type to extend")
	}
	m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: float8sCodec{t.Codec}})
	return nil
}

type float8sCodec struct{ pgtype.Codec }

func (c float8sCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(Float8s); ok && format == pgtype.BinaryFormatCode {
		return encodeFloat8s{}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodeFloat8s struct{}

// Encode writes fs as AppendFloat8Array does; a nil Float8s is NULL.
func (encodeFloat8s) Encode(value any, buf []byte) ([]byte, error) {
	fs := value.(Float8s)
	if fs == nil {
		return nil, nil
	}
	return AppendFloat8Array(buf, fs), nil
}

// AppendFloat8Array appends fs in Postgres's binary float8[] format: dimensions (none when fs
// is empty), a has-nulls flag, the element type, then per dimension its length and lower
// bound, then each element as a length and its big-endian IEEE 754 bits.
func AppendFloat8Array(buf []byte, fs []float64) []byte {
	ndim := uint32(1)
	if len(fs) == 0 {
		ndim = 0
	}
	buf = binary.BigEndian.AppendUint32(buf, ndim)
	buf = binary.BigEndian.AppendUint32(buf, 0)
	buf = binary.BigEndian.AppendUint32(buf, pgtype.Float8OID)
	if ndim == 0 {
		return buf
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(fs)))
	buf = binary.BigEndian.AppendUint32(buf, 1)
	for _, f := range fs {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(f))
	}
	return buf
}
