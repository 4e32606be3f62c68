package reliability_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// leaderKills counts the leaders these tests killed, for the figures.
var leaderKills atomic.Int64

// A three-server cluster on loopback, as production runs it, with the hosts talking to a
// client agent. While hosts acquire, run and release in a loop, the leader is killed
// (SIGKILL) again and again, and restarted from its data directory after a new leader is
// elected. tierlock rides through the elections ("No cluster leader" and lost leadership are
// retried); no command runs without a slot, no more than max_concurrent run at once, every run
// succeeds, and the tier ends clean.
func TestLeaderLoss(t *testing.T) {
	t.Parallel()
	const hosts, slots, kills = 6, 2, 3
	dir := t.TempDir()
	ctx := context.Background()
	cluster, err := consulagent.StartCluster(ctx, consulagent.Need(t), dir, 3, consulagent.Config{LogPath: filepath.Join(dir, "server.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	var join []string
	for _, s := range cluster.Servers {
		join = append(join, s.SerfAddr)
	}
	client, err := consulagent.Launch(ctx, consulagent.Need(t), consulagent.Config{Client: true, DataDir: filepath.Join(dir, "client"),
		Join: join, LogPath: filepath.Join(dir, "client.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Stop()
	admin := clientOf(t, client, "")
	if _, err := admin.KV().Put(kvPair("max_concurrent", fmt.Sprint(slots)), nil); err != nil {
		t.Fatal(err)
	}

	rec := newRecorder(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The hosts stop before the test returns, a t.Fatal's return too: a host's t.Error after
	// the test ended would panic the whole test binary (seen when a leader election ran out
	// of time on a starved machine), leaving the other tests' agents running.
	stopHosts := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopHosts()
	var runs, retried, noLeader atomic.Int64
	for i := range hosts {
		h := newHost(t, fmt.Sprintf("web-%d", i), client.Addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				cmd, o := h.command(append([]string{"run", "--tier", tier, "--wait", "2m", "--consul-timeout", "60s", "--"},
					rec.script(client.Addr, h.name, 200*time.Millisecond, 0)...)...)
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				if err := wait(cmd, o); err != nil {
					t.Error(err)
					return
				}
				runs.Add(1)
				if strings.Contains(o.stderr.String(), "retrying") {
					retried.Add(1)
				}
				if strings.Contains(o.stderr.String(), "No cluster leader") {
					noLeader.Add(1)
				}
				if o.code != 0 {
					t.Errorf("%s: %s", h.name, o)
				}
			}
		}()
	}
	for k := 0; k < kills; k++ {
		time.Sleep(2 * time.Second) // runs go on
		leader, err := cluster.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leader.Kill()
		leaderKills.Add(1)
		if _, err := cluster.Leader(ctx); err != nil { // a new one, among the other two
			t.Fatal(err)
		}
		if err := leader.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := leader.Ready(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	stopHosts()

	t.Logf("%d runs by %d hosts through %d leader kills; %d runs retried Consul errors (%d of them \"No cluster leader\"); peak %d of %d slots",
		runs.Load(), hosts, kills, retried.Load(), noLeader.Load(), rec.peak(t), slots)
	if p := rec.peak(t); p > slots {
		t.Errorf("%d commands ran at once, max_concurrent is %d", p, slots)
	}
	starts, total := rec.starts(t), 0
	for _, n := range starts {
		total += n
	}
	if int64(total) != runs.Load() {
		t.Errorf("%d commands started in %d runs", total, runs.Load())
	}
	s := tierOf(t, admin)
	testkit.Eventually(t, "the queue to empty", func() bool { return len(tierOf(t, admin).Queue) == 0 })
	if s.RunningKeys != 0 || s.Current != 0 {
		t.Errorf("left behind: current %d, %d slots", s.Current, s.RunningKeys)
	}
}
