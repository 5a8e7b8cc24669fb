package prediction

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Every stored prediction has an id of the server's (predictions.id, its primary key): a
// UUIDv7 that the Service makes when it computes the answer, which the answer carries, and
// which the record carries through the Recorders and the persist task, so that each write and
// replay of the record is idempotent on it (ON CONFLICT (id) DO NOTHING). The client's
// X-Request-ID is a correlation field (request_id), not a key: two predictions sent with the
// same one are two rows.

// NewID returns the id of a newly computed prediction: a UUIDv7 (time-ordered, so the primary
// key grows at its right edge), or, should the random source fail, the DerivedID of requestID
// and at.
func NewID(requestID string, at time.Time) uuid.UUID {
	if id, err := uuid.NewV7(); err == nil {
		return id
	}
	return DerivedID(requestID, at)
}

// DerivedID returns the id of a record that carries none: a record enqueued by an api from
// before server ids (a persist task that a queue Redis may still hold and retry), or one built
// without an id. It is a function of the request id and of created_at to the microsecond (what
// Postgres keeps), so every replay of the record gets the same id, and it is the id that
// migration 00018 gave the rows stored before it (migrations/00018_prediction_server_id.sql
// computes the same bytes): a replay of a record stored then is skipped too. It has the layout
// of a UUIDv7: created_at's Unix milliseconds in the first 48 bits, version 7, variant 10, and
// the first bits of SHA-256("<request id>@<created_at in Unix µs>") in the rest.
func DerivedID(requestID string, at time.Time) uuid.UUID {
	us := at.UnixMicro()
	ms := us / 1000
	if us%1000 < 0 {
		ms-- // floor, as Postgres's floor(extract(epoch …) * 1000)
	}
	sum := sha256.Sum256([]byte(requestID + "@" + strconv.FormatInt(us, 10)))
	var id uuid.UUID
	var msb [8]byte
	binary.BigEndian.PutUint64(msb[:], uint64(ms))
	copy(id[:6], msb[2:])
	copy(id[6:], sum[:10])
	id[6] = id[6]&0x0f | 0x70 // version 7
	id[8] = id[8]&0x3f | 0x80 // variant 10 (RFC 9562)
	return id
}
