// Package testkit holds what every test package needs the same way: a key prefix of its own
// per test, a context that cannot outlive the test, polling instead of guessed sleeps, and the
// check of tierlock's invariant read straight from Consul's keys.
package testkit

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Wait bounds Eventually and Ctx. Only a failing test waits that long, so it is generous: a
// busy CI machine must not turn a slow pass into a failure.
const Wait = time.Minute

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// prefixes holds each running test's prefix, and runs how often a test of that name began, so
// that go test -count=N (how a flaky test is hunted) gives each repetition keys of its own
// instead of the keys the last one left.
var prefixes = struct {
	sync.Mutex
	of   map[testing.TB]string
	runs map[string]int
}{of: map[testing.TB]string{}, runs: map[string]int{}}

// Prefix is the test's own key prefix, so that tests sharing one agent (and subtests run in
// parallel) never see each other's keys. Every character a tierlock name refuses becomes _.
// A test's second run in one process (-count) gets the suffix _2, and so on.
func Prefix(t testing.TB) string {
	prefixes.Lock()
	defer prefixes.Unlock()
	if p, ok := prefixes.of[t]; ok {
		return p
	}
	name := unsafe.ReplaceAllString(t.Name(), "_")
	prefixes.runs[name]++
	p := "test/" + name
	if n := prefixes.runs[name]; n > 1 {
		p += fmt.Sprintf("_%d", n)
	}
	// Never deleted: a cleanup may still ask, and a test process runs a few thousand tests.
	prefixes.of[t] = p
	return p
}

// Ctx is a context for one test's calls: cancelled when the test ends, so that nothing it
// started talks to Consul afterwards, and after Wait, so that a hung call fails the test
// instead of the whole run's -timeout. It is not t.Context(), which is cancelled before the
// test's cleanups run, and cleanups use Ctx too.
func Ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return c
}

// Group runs a test's goroutines with a context of Ctx's kind, and the test does not end
// before they do: a goroutine that reports through t after its test ended panics the whole
// test binary. Its wait is a cleanup registered before the context's cancel, so a test that
// fails early first cancels what its goroutines wait on, then waits for them.
type Group struct {
	ctx context.Context
	wg  sync.WaitGroup
}

// NewGroup is a Group for t.
func NewGroup(t testing.TB) *Group {
	g := &Group{}
	t.Cleanup(g.wg.Wait)
	g.ctx = Ctx(t)
	return g
}

// Go runs f in a goroutine of the group, with the group's context.
func (g *Group) Go(f func(ctx context.Context)) { g.wg.Go(func() { f(g.ctx) }) }

// Wait waits for the group's goroutines.
func (g *Group) Wait() { g.wg.Wait() }

// Poll calls cond until it returns true, for up to d, and reports whether it did. It backs off
// from 10ms to 250ms: quick conditions are seen at once, slow ones (a Prometheus scrape, a
// container's systemd) are not asked dozens of times a second. It never fails a test, so
// callers can say what they saw, report with Errorf, or call it from another goroutine.
func Poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
}

// Eventually waits until cond holds, and fails the test, naming what it waited for, if it does
// not within Wait. Call it from the test's goroutine (it may call t.Fatalf).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Poll(Wait, cond) {
		t.Fatalf("gave up after %s waiting for %s", Wait, what)
	}
}

// CheckInvariant fails the test (Errorf) unless, in every tier under prefix, current is
// exactly the number of running/ keys, an absent or empty current counting as "0". It compares
// the stored text, not lock's reading of it, so that a bug in the code under test cannot hide
// itself: "01", " 1" or a current left behind in a tier with no slots all break it. The read
// is consistent, and the failure shows every key of the prefix. It lists the whole prefix: a
// test that stored junk by the megabyte checks its tiers one by one instead.
func CheckInvariant(t testing.TB, c *api.Client, prefix string) {
	t.Helper()
	pairs, _, err := c.KV().List(prefix+"/", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatalf("read %s/: %v", prefix, err)
	}
	current, running := map[string]string{}, map[string]int{}
	for _, p := range pairs {
		// A tier is ENV/SERVICE: the first two names under the prefix.
		parts := strings.SplitN(strings.TrimPrefix(p.Key, prefix+"/"), "/", 3)
		if len(parts) < 3 {
			continue
		}
		tier := parts[0] + "/" + parts[1]
		if _, ok := current[tier]; !ok {
			current[tier] = "0"
		}
		switch {
		case parts[2] == "current" && len(p.Value) > 0:
			current[tier] = string(p.Value)
		case strings.HasPrefix(parts[2], "running/"):
			running[tier]++
		}
	}
	tiers := make([]string, 0, len(current))
	for tier := range current {
		tiers = append(tiers, tier)
	}
	sort.Strings(tiers)
	for _, tier := range tiers {
		if n := running[tier]; current[tier] != fmt.Sprint(n) {
			t.Errorf("invariant broken in %s: current %q, %d running/ keys\n%s", tier, current[tier], n, dump(pairs, prefix))
		}
	}
}

func dump(pairs api.KVPairs, prefix string) string {
	var b strings.Builder
	for _, p := range pairs {
		fmt.Fprintf(&b, "  %s=%s@%d\n", strings.TrimPrefix(p.Key, prefix+"/"), p.Value, p.ModifyIndex)
	}
	return b.String()
}

// Parallel makes n the number of parallel tests a package runs at once, unless -parallel was
// given; for a TestMain, after flag.Parse. go test's default is the number of cores, right for
// tests that compute; tests that mostly wait on Consul, on held requests or on the processes
// they start leave the cores idle at that.
func Parallel(n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", fmt.Sprint(n))
	}
}
