package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock"
)

// junkBytes is how much hostile data TestBootstrapJunk stores under the prefix. The default
// keeps the test within a CI run and still goes past every bound a read has (a listing's
// answer, a tier's listing, a fetch's answer); docs/security.md quotes a run with 1 GB:
//
//	go test -count=1 -run TestBootstrapJunk ./cmd/tierlock-reaper -args -junk-bytes=1073741824
var junkBytes = flag.Int64("junk-bytes", 128<<20, "bytes of junk keys and values TestBootstrapJunk stores under the prefix")

const (
	// junkValue is the size of one junk value: Consul's default limit (kv_max_value_size).
	junkValue = 512 << 10
	// junkName is the length of one junk key name: near the 1 MB of Consul's HTTP header
	// limit, the only bound on a name written with a plain PUT.
	junkName = 900 << 10
)

// junkKey is one junk key to store: its name relative to the test's prefix, and its value.
type junkKey struct {
	key   string
	value []byte
}

// putJunk stores about budget bytes under the test's prefix where hosts or anyone with write
// on a tier could: half in keys whose names are 900 KB long (two under the first real tier's
// converged/, as one host of the tier may write them, one outside every tier, the rest in the
// running/, queue/ and converged/ of a tier of their own), half in values of 512 KB (in the
// running/ and converged/ of another tier of their own, beside the first real tier's keys,
// and outside every tier). It writes with a few PUTs at a time: a transaction takes no more
// than 512 KB (txn_max_req_len), so a PUT a key is what a transaction would be.
func putJunk(t *testing.T, budget int64) {
	t.Helper()
	var keys []junkKey
	name := func(i int) string { return fmt.Sprintf("%06d", i) + strings.Repeat("n", junkName-6) }
	blob := []byte(strings.Repeat("j", junkValue))
	// Names: 900 KB each.
	nNames := max(int(budget/2/junkName), 6)
	keys = append(keys, junkKey{tiers[0] + "/converged/" + name(0), []byte("{}")}, junkKey{tiers[0] + "/converged/" + name(1), []byte("{}")},
		junkKey{name(2), []byte("x")})
	dirs := []string{"running/", "queue/", "converged/"}
	for i := 3; i < nNames; i++ {
		keys = append(keys, junkKey{"junk/names/" + dirs[i%3] + name(i), []byte("x")})
	}
	// Values: 512 KB each.
	nValues := max(int((budget-int64(nNames)*junkName)/junkValue), 8)
	running := 0
	for i := range nValues {
		switch i % 4 {
		case 0:
			keys = append(keys, junkKey{fmt.Sprintf("junk/values/running/host-%05d", i), blob})
			running++
		case 1:
			keys = append(keys, junkKey{fmt.Sprintf("junk/values/converged/host-%05d", i), blob})
		case 2:
			keys = append(keys, junkKey{fmt.Sprintf("%s/junk-%05d", tiers[0], i), blob})
		default:
			keys = append(keys, junkKey{fmt.Sprintf("junk/blob/%05d", i), blob})
		}
	}
	// The values tier's current counts its junk slots, so that it has no drift: its problem
	// is the values.
	keys = append(keys, junkKey{"junk/values/current", []byte(strconv.Itoa(running))})

	start := time.Now()
	kv := agents.Client(t).KV()
	work := make(chan junkKey)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if _, err := kv.Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + k.key, Value: k.value}, nil); err != nil {
					t.Errorf("put %.80s: %v", k.key, err)
				}
			}
		}()
	}
	var total int64
	for _, k := range keys {
		total += int64(len(k.key) + len(k.value))
		work <- k
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	agent, _ := agents.Get(t)
	t.Logf("stored %d MB of junk (%d names of %d KB, %d values of %d KB) in %s; consul's peak RSS %d MB",
		total>>20, nNames, junkName>>10, nValues, junkValue>>10, time.Since(start).Round(time.Second), peakRSS(t, agent.PID())>>20)
}

// heldIn is heldBy for the real tiers only, each read on its own: a read of the whole prefix
// would list the junk too, and the test has no need to.
func heldIn(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tr := range tiers {
		sem, err := lock.New(agents.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tr, RequestTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		s, err := sem.Read(testkit.Ctx(t))
		if err != nil {
			t.Fatalf("read %s: %.500v", tr, err)
		}
		if s.Drift() {
			t.Errorf("invariant broken in %s: current %d, %d holders", s.Tier, s.Current, len(s.Holders))
		}
		for _, rec := range s.Holders {
			out[rec.InstanceID] = append(out[rec.InstanceID], s.Tier)
		}
	}
	return out
}

// peakRSS is the process's peak resident set (VmHWM), read from /proc while it runs.
func peakRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// The real bootstrap, through the stand-in Runtime API, frees a terminated instance's slots in
// every tier while -junk-bytes of junk (128 MB by default) lies under the prefix, keys of 900 KB
// names and values of 512 KB, and its memory stays within half the Lambda's 128 MB: a read
// lists key names first, each listing's answer capped (tier by tier when the prefix's names
// are too many), skips the names no tier key can have, and fetches the values of tier keys
// only, in batches whose answers are capped, keeping none larger than a record can be.
func TestBootstrapJunk(t *testing.T) {
	bin := buildBootstrap(t)
	aws := newFakeAWS(t)
	rt := newRuntimeAPI(t)
	defer rt.srv.Close()
	takeSlots(t, instTerminated, instBystander)
	putJunk(t, *junkBytes)

	proc := startBootstrap(t, bin, rt, env(t, aws))
	defer proc.stop()
	stdout, stderr, exited := proc.stdout, proc.stderr, proc.exited

	id := "22222222-0000-4000-8000-000000000001"
	start := time.Now()
	o := rt.invoke(t, exited, id, fixture(t, "ec2-terminated.json"))
	took := time.Since(start)
	if !o.ok {
		t.Fatalf("answer: %.2000s\nlog: %.4000s\nstderr: %.2000s", o.body, stdout.String(), stderr.String())
	}
	var res result
	if err := json.Unmarshal([]byte(o.body), &res); err != nil {
		t.Fatalf("answer %q: %v", o.body, err)
	}
	if len(res.Freed) != len(tiers) || res.InstanceID != instTerminated {
		// The bootstrap's log says why a tier was left (a warning per tier not read, or a
		// Consul error past its bound).
		t.Errorf("answer %s, want %d slots of %s freed (after %s)\nlog: %.6000s", o.body, len(tiers), instTerminated, took.Round(time.Millisecond), stdout.String())
	}
	if got := heldIn(t); len(got) != 1 || len(got[instBystander]) != len(tiers) {
		t.Errorf("slots left: %v", got)
	}
	// A second event, as when the junk is still there the next time.
	start2 := time.Now()
	o = rt.invoke(t, exited, "22222222-0000-4000-8000-000000000002", fixture(t, "ec2-terminated.json"))
	if !o.ok {
		t.Errorf("second answer: %.2000s", o.body)
	}
	took2 := time.Since(start2)
	log := stdout.String()
	if strings.Contains(log, strings.Repeat("n", 100)) {
		t.Errorf("the log quotes a junk name at length: %d bytes of log", len(log))
	}
	// The tiers of junk are named in the log, not failed.
	for _, tr := range []string{"junk/names", "junk/values"} {
		if !strings.Contains(log, `"msg":"tier not read: a slot of this instance there, if any, is not freed"`) ||
			!strings.Contains(log, "monitor: tier "+tr+" not read: lock: too many keys") {
			t.Errorf("no warning of %s in the log: %.3000s", tr, log)
		}
	}
	peak := peakRSS(t, proc.cmd.Process.Pid)
	agent, _ := agents.Get(t)
	t.Logf("junk %d MB: peak RSS of the bootstrap process %d MB (race detector: %v); the events took %s and %s; consul's peak RSS %d MB",
		*junkBytes>>20, peak>>20, consulagent.RaceEnabled, took.Round(time.Millisecond), took2.Round(time.Millisecond), peakRSS(t, agent.PID())>>20)
	// The race detector multiplies a Go program's memory several times; the Lambda runs
	// without it.
	limit := 64 << 20
	if consulagent.RaceEnabled {
		limit = 256 << 20
	}
	if peak > limit {
		t.Errorf("peak RSS %d MB, want under %d MB (the Lambda has 128 MB)", peak>>20, limit>>20)
	}
}
