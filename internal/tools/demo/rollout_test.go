package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// lockedBuffer is the demo's output: its watch and its hosts' relays write at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRolloutDemo runs `make demo-rollout`'s demo end to end against a real Consul agent and
// real tierlock processes, and checks that it shows what the README says: B goes canary, 2,
// 4, the rest, to complete; C halts after its canary (host-1) fails, the other hosts asking
// for C exit 75 at once saying so, the hosts on B converge; D supersedes C, starts at its
// canary and completes. Every slots line keeps to the schedule and to max_concurrent.
func TestRolloutDemo(t *testing.T) {
	consul := consulagent.Need(t)
	bin := filepath.Join(t.TempDir(), "tierlock")
	if err := consulagent.Build("../../../cmd/tierlock", bin, "-X main.version=0.0.0-demo"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out lockedBuffer
	start := time.Now()
	err := runRollout(ctx, &out, bin, consul, 10)
	text := out.String()
	t.Logf("the demo took %s; its output:\n%s", time.Since(start).Round(time.Millisecond), text)
	if err != nil {
		t.Fatalf("demo: %v", err)
	}

	phases := strings.Split(text, "\n== ")
	if len(phases) != 4 {
		t.Fatalf("want the preamble and 3 phases, got %d parts", len(phases))
	}
	b, c, d := phases[1], phases[2], phases[3]

	// B: canary, step 1 (2 hosts), step 2 (4 hosts), then the rest, to complete.
	inOrder(t, "B", b,
		"rollout  revision B canary (step 0 of 1,2,4,max, size 1): 1 admitted, 1 running",
		"rollout  revision B step (step 1 of 1,2,4,max, size 2): 2 admitted, 2 running",
		"rollout  revision B step (step 2 of 1,2,4,max, size 4): 4 admitted, 4 running",
		"rollout  revision B full",
		"=> demo/web rollout: revision B complete; 10 of 10 hosts on it; 10 successes, 0 failures")
	if n := strings.Count(b, "B: exit 0"); n != 10 {
		t.Errorf("B: %d runs exited 0, want 10", n)
	}

	// C: host-1 is the canary and fails; C halts naming it; host-2..6 exit 75 saying so;
	// host-7..10, still on B, converge. (The hosts' lines and the watch's are in order among
	// themselves only.)
	contains(t, "C", c, "host-1  C: slot acquired as a mover (rollout step 0: the canary)")
	inOrder(t, "C", c,
		"rollout  revision C canary (step 0 of 1,2,4,max, size 1): 1 admitted, 1 running",
		"rollout  revision C halted; 0 of 10 hosts on it; 0 successes, 1 failures; failed: host-1",
		"=> demo/web rollout: revision C halted; 0 of 10 hosts on it; 0 successes, 1 failures; failed: host-1",
		"C halted after its canary host-1 failed")
	inOrder(t, "C", c, "host-1  C: exit 1", "=> demo/web rollout: revision C halted")
	for i := 2; i <= 6; i++ {
		h := fmt.Sprintf("host-%d", i)
		for _, want := range []string{
			fmt.Sprintf("%-7s C: lock: revision halted: C in demo/web after 1 failure(s): host-1 failed it with exit 1", h),
			fmt.Sprintf("%-7s C: exit 75", h),
		} {
			if !strings.Contains(c, want) {
				t.Errorf("C: no line %q", want)
			}
		}
		if strings.Contains(c, fmt.Sprintf("%-7s C: slot acquired", h)) {
			t.Errorf("C: %s, a mover to C, was given a slot", h)
		}
	}
	for i := 7; i <= 10; i++ {
		if want := fmt.Sprintf("%-7s B: exit 0", fmt.Sprintf("host-%d", i)); !strings.Contains(c, want) {
			t.Errorf("C: no line %q: the hosts on B did not keep converging", want)
		}
	}

	// D: supersedes C at its canary, then 2, 4, the rest, to complete.
	contains(t, "D", d, "host-1  D: re-entered the slot an earlier run left held")
	inOrder(t, "D", d,
		"rollout  revision D canary (step 0 of 1,2,4,max, size 1)",
		"rollout  revision D step (step 1 of 1,2,4,max, size 2): 2 admitted, 2 running",
		"rollout  revision D step (step 2 of 1,2,4,max, size 4): 4 admitted, 4 running",
		// host-1's success counts toward D only if D was already the rollout when it
		// released (its re-entry is no admission): 9 or 10 successes.
		"=> demo/web rollout: revision D complete; 10 of 10 hosts on it;",
		"demo/web: earlier: C halted (0 successes, 1 failures)",
		"demo/web: earlier: B superseded, completed (10 successes, 0 failures)")
	if n := strings.Count(d, "D: exit 0"); n != 10 {
		t.Errorf("D: %d runs exited 0, want 10", n)
	}

	checkSlots(t, text)
}

func contains(t *testing.T, phase, text, want string) {
	t.Helper()
	if !strings.Contains(text, want) {
		t.Errorf("%s: no %q", phase, want)
	}
}

// inOrder checks that each of wants appears in text, each after the one before.
func inOrder(t *testing.T, phase, text string, wants ...string) {
	t.Helper()
	at := 0
	for _, w := range wants {
		i := strings.Index(text[at:], w)
		if i < 0 {
			if strings.Contains(text, w) {
				t.Errorf("%s: %q is there, but not after %q", phase, w, text[max(at-80, 0):at])
			} else {
				t.Errorf("%s: no %q", phase, w)
			}
			continue
		}
		at += i + len(w)
	}
}

var (
	slotsLine = regexp.MustCompile(`slots    (\d+)/(\d+) held: (.*) \| waiting:`)
	holderRe  = regexp.MustCompile(`host-\d+ \((\w+)(?: (canary|step (\d+)))?, (\w+)\)`)
)

// checkSlots checks every slots line the demo printed: never more than max_concurrent held,
// and no step of a revision holding more running movers than the schedule 1,2,4,max allows.
func checkSlots(t *testing.T, text string) {
	t.Helper()
	sizes := []int{1, 2, 4}
	n := 0
	for _, line := range strings.Split(text, "\n") {
		m := slotsLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		held, _ := strconv.Atoi(m[1])
		limit, _ := strconv.Atoi(m[2])
		if held > limit {
			t.Errorf("%d slots held of %d: %s", held, limit, line)
		}
		running := map[string]int{}
		for _, h := range holderRe.FindAllStringSubmatch(m[3], -1) {
			if h[2] == "" || h[4] != "running" {
				continue
			}
			step := 0
			if h[3] != "" {
				step, _ = strconv.Atoi(h[3])
			}
			if step >= len(sizes) {
				continue // max: only max_concurrent
			}
			key := h[1] + " step " + strconv.Itoa(step)
			if running[key]++; running[key] > sizes[step] {
				t.Errorf("%d movers of %s running, the schedule allows %d: %s", running[key], key, sizes[step], line)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d slots lines", n)
	}
}
