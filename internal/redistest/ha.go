package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/localsvc"
)

// SentinelMaster is the master name of a Sentinel group started by NewSentinel.
const SentinelMaster = "predq"

// Sentinel is a running throwaway Sentinel group: a master, a replica and three sentinels,
// all on loopback, stopped at the end of the test.
type Sentinel struct {
	URL       string   // redis-sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/0?master=predq
	Sentinels []string // the sentinels' addresses

	mu    sync.Mutex
	nodes map[string]*localsvc.Server // the data nodes (master and replica) by address
}

// NewSentinel starts a master, a replica of it and three sentinels that watch it with a
// quorum of two, a down-after of one second and a failover timeout of five, and waits until
// the replica is in sync and every sentinel knows the replica and the other sentinels.
func NewSentinel(t testing.TB) *Sentinel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := &Sentinel{nodes: map[string]*localsvc.Server{}}
	start := func(conf string, extra ...string) *localsvc.Server {
		srv, err := localsvc.StartRedisConfigured(ctx, conf, extra...)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		return srv
	}
	master := start("")
	replica := start("", "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	g.nodes[addr(master)], g.nodes[addr(replica)] = master, replica
	conf := fmt.Sprintf(`sentinel monitor %[1]s 127.0.0.1 %[2]d 2
sentinel down-after-milliseconds %[1]s 1000
sentinel failover-timeout %[1]s 5000
sentinel parallel-syncs %[1]s 1
`, SentinelMaster, master.Port)
	for range 3 {
		s := start(conf, "--sentinel")
		g.Sentinels = append(g.Sentinels, addr(s))
	}
	g.URL = "redis-sentinel://" + strings.Join(g.Sentinels, ",") + "/0?master=" + SentinelMaster
	rc := redis.NewClient(&redis.Options{Addr: addr(replica)})
	defer rc.Close()
	waitFor(ctx, t, "the replica to sync", func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for _, a := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a})
		waitFor(ctx, t, "sentinel "+a+" to know the group", func() bool {
			m, err := sc.Master(ctx, SentinelMaster).Result()
			return err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2"
		})
		sc.Close()
	}
	return g
}

// MasterAddr asks the sentinels which node is the master now.
func (g *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, a := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a})
		hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		sc.Close()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("redistest: no sentinel names the master: %w", last)
}

// StopMaster stops the current master (its data is gone with it) and returns its address.
// The sentinels then promote the replica.
func (g *Sentinel) StopMaster(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := g.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	srv := g.nodes[a]
	delete(g.nodes, a)
	g.mu.Unlock()
	if srv == nil {
		t.Fatalf("redistest: master %s is not a node of this group", a)
	}
	_ = srv.Stop()
	return a
}

// Client returns a client of the group's current master (through the sentinels), closed at
// the end of the test.
func (g *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: g.Sentinels})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Cluster is a running throwaway Redis Cluster on loopback, stopped at the end of the test.
type Cluster struct {
	URL   string   // redis-cluster://127.0.0.1:P1,...
	Addrs []string // every node's address

	mu    sync.Mutex
	nodes map[string]*localsvc.Server
}

// NewCluster starts masters*(1+replicas) nodes with --cluster-enabled yes and a node timeout
// of two seconds, joins them with `redis-cli --cluster create --cluster-replicas replicas`,
// and waits until every node reports cluster_state:ok and every replica is in sync.
func NewCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := &Cluster{nodes: map[string]*localsvc.Server{}}
	for range masters * (1 + replicas) {
		srv, err := localsvc.StartRedisConfigured(ctx, "", "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		c.Addrs = append(c.Addrs, addr(srv))
		c.nodes[addr(srv)] = srv
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range c.Addrs {
		rc := redis.NewClient(&redis.Options{Addr: a})
		waitFor(ctx, t, "node "+a+" to join the cluster", func() bool {
			info, err := rc.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.Addrs)))
		})
		// A replica that never finished its first sync cannot take over its master.
		waitFor(ctx, t, "node "+a+" to be a master or a synced replica", func() bool {
			info, err := rc.Info(ctx, "replication").Result()
			return err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up"))
		})
		rc.Close()
	}
	c.URL = "redis-cluster://" + strings.Join(c.Addrs, ",")
	return c
}

// Client returns a cluster client that reloads the slot map every second (go-redis does not on
// a dead master), closed at the end of the test.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// MasterOf returns the address of the master that serves key's hash slot now (CLUSTER
// KEYSLOT, then CLUSTER SLOTS, asked of any node that answers).
func (c *Cluster) MasterOf(ctx context.Context, key string) (string, error) {
	var last error
	for _, a := range c.Live() {
		rc := redis.NewClient(&redis.Options{Addr: a})
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = rc.ClusterSlots(ctx).Result() //nolint:staticcheck // CLUSTER SLOTS is the slot map operators read (redis-cli); Redis 7.0 still serves it
		}
		rc.Close()
		if err != nil {
			last = err
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr, nil
			}
		}
		last = fmt.Errorf("slot %d of %q is not served", slot, key)
	}
	return "", fmt.Errorf("redistest: master of %q: %w", key, last)
}

// Live returns the addresses of the nodes not stopped.
func (c *Cluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, a := range c.Addrs {
		if c.nodes[a] != nil {
			out = append(out, a)
		}
	}
	return out
}

// StopNode stops the node at addr (its data is gone with it); its replica takes over its
// slots once the others agree it is down (the node timeout, two seconds, and an election).
func (c *Cluster) StopNode(t testing.TB, addr string) {
	t.Helper()
	c.mu.Lock()
	srv := c.nodes[addr]
	c.nodes[addr] = nil
	c.mu.Unlock()
	if srv == nil {
		t.Fatalf("redistest: no live node %s", addr)
	}
	_ = srv.Stop()
}

// WaitFailover waits until every live node reports cluster_state:ok with no slot served by
// the stopped master old: its replica has taken over.
func (c *Cluster) WaitFailover(t testing.TB, old string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, a := range c.Live() {
		rc := redis.NewClient(&redis.Options{Addr: a})
		waitFor(ctx, t, "node "+a+" to see "+old+" replaced", func() bool {
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			slots, err := rc.ClusterSlots(ctx).Result() //nolint:staticcheck // as in MasterOf
			if err != nil {
				return false
			}
			for _, s := range slots {
				if len(s.Nodes) == 0 || s.Nodes[0].Addr == old {
					return false
				}
			}
			return true
		})
		rc.Close()
	}
}

func addr(s *localsvc.Server) string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

func waitFor(ctx context.Context, t testing.TB, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
