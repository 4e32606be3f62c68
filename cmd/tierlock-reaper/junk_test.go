package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// junkValue is the size of one junk value: Consul's default limit (kv_max_value_size).
const junkValue = 512 << 10

// putJunk stores about 200 values of 512 KB under the test's prefix, where anyone with write on
// the prefix could: outside every tier's layout, beside a tier's keys, and in the running/ and
// queue/ of a tier of their own.
func putJunk(t *testing.T) {
	t.Helper()
	blob := []byte(strings.Repeat("j", junkValue))
	var keys []string
	for i := range 120 {
		keys = append(keys, fmt.Sprintf("junk/blob/%03d", i))
	}
	for i := range 40 {
		keys = append(keys, fmt.Sprintf("prod/web/junk-%03d", i))
	}
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("junk/tier/running/host-%03d", i), fmt.Sprintf("junk/tier/queue/host-%03d", i))
	}
	// The junk tier's current counts its junk slots, so that it has no drift: its problem is
	// the values.
	if _, err := consul(t).KV().Put(&api.KVPair{Key: prefix(t) + "/junk/tier/current", Value: []byte("20")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := consul(t).KV().Put(&api.KVPair{Key: prefix(t) + "/" + k, Value: blob}, nil); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	t.Logf("stored %d junk values of %d bytes (%d MB)", len(keys), junkValue, len(keys)*junkValue>>20)
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

// The real bootstrap, through the stand-in Runtime API, frees a terminated instance's slots
// while about 100 MB of junk lies under the prefix, and its memory stays well within the
// Lambda's 128 MB: a read lists key names first and fetches only the values of tier keys, a
// batch at a time, keeping none larger than a record can be.
func TestBootstrapJunk(t *testing.T) {
	bin := buildBootstrap(t)
	aws := newFakeAWS(t)
	rt := newRuntimeAPI(t)
	defer rt.srv.Close()
	takeSlots(t, instTerminated, instBystander)
	putJunk(t)

	proc := startBootstrap(t, bin, rt, env(t, aws))
	defer proc.stop()
	stdout, stderr, exited := proc.stdout, proc.stderr, proc.exited

	id := "22222222-0000-4000-8000-000000000001"
	o := rt.invoke(t, exited, id, fixture(t, "ec2-terminated.json"))
	if !o.ok {
		t.Fatalf("answer: %s\nlog: %s\nstderr: %s", o.body, stdout.String(), stderr.String())
	}
	var res result
	if err := json.Unmarshal([]byte(o.body), &res); err != nil {
		t.Fatalf("answer %q: %v", o.body, err)
	}
	if len(res.Freed) != len(tiers) || res.InstanceID != instTerminated {
		t.Errorf("answer %s, want %d slots of %s freed", o.body, len(tiers), instTerminated)
	}
	if got := heldBy(t); len(got) != 1 || len(got[instBystander]) != len(tiers) {
		t.Errorf("slots left: %v", got)
	}
	// A second event, as when the junk is still there the next time.
	o = rt.invoke(t, exited, "22222222-0000-4000-8000-000000000002", fixture(t, "ec2-terminated.json"))
	if !o.ok {
		t.Errorf("second answer: %s", o.body)
	}
	peak := peakRSS(t, proc.cmd.Process.Pid)
	t.Logf("peak RSS of the bootstrap process: %d MB (race detector: %v)", peak>>20, raceEnabled)
	// The race detector multiplies a Go program's memory several times; the Lambda runs
	// without it.
	limit := 64 << 20
	if raceEnabled {
		limit = 256 << 20
	}
	if peak > limit {
		t.Errorf("peak RSS %d MB, want under %d MB (the Lambda has 128 MB)", peak>>20, limit>>20)
	}
}
