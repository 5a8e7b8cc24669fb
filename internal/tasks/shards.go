package tasks

import (
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"

	"github.com/google/uuid"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// BatchQueues returns the names of the batch queue's n shards. With n ≤ 1 it is the one
// queue "batch", as on a single Redis. With more, shard i is "batch-i", or "batch-i-k" with
// the smallest k ≥ 1 that puts its hash slot inside the i-th of n equal slot ranges: asynq
// keeps every key of a queue in the slot of its name ("asynq:{batch-i}:..."), and
// `redis-cli --cluster create` gives n masters those n ranges, so the shards land one on each
// master. BatchQueues(3) is batch-0-3, batch-1-2, batch-2-2 (README, "Scaling out").
func BatchQueues(n int) []string {
	if n <= 1 {
		return []string{QueueBatch}
	}
	out := make([]string, n)
	for i := range n {
		// A margin keeps clear of the rounding of the ranges' ends by redis-cli.
		lo, hi := i*clusterSlots/n+16, (i+1)*clusterSlots/n-16
		for k := 0; ; k++ {
			name := QueueBatch + "-" + strconv.Itoa(i)
			if k > 0 {
				name += "-" + strconv.Itoa(k)
			}
			if s := KeySlot(name); s >= lo && s < hi {
				out[i] = name
				break
			}
		}
	}
	return out
}

// BatchQueue returns the shard of BatchQueues(n) that holds chunk of job id (the job's
// job:run task is chunk -1): a hash of both, so that the chunks of one job spread over every
// shard.
func BatchQueue(n int, id uuid.UUID, chunk int) string {
	if n <= 1 {
		return QueueBatch
	}
	h := fnv.New32a()
	h.Write(id[:])
	fmt.Fprint(h, chunk)
	return BatchQueues(n)[h.Sum32()%uint32(n)]
}

// ShardQueues returns the worker's queue weights with the batch queue's weight given to each
// of its n shards, so that a worker drains them all equally.
func ShardQueues(weights map[string]int, n int) map[string]int {
	out := maps.Clone(weights)
	w, ok := out[QueueBatch]
	if !ok || n <= 1 {
		return out
	}
	delete(out, QueueBatch)
	for _, q := range BatchQueues(n) {
		out[q] = w
	}
	return out
}

// KeySlot is the Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384),
// as CLUSTER KEYSLOT computes it.
func KeySlot(key string) int {
	if i := indexByte(key, '{'); i >= 0 {
		if j := indexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
