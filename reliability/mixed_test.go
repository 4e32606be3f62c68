package reliability_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
)

// A fleet upgrades tierlock through the runs tierlock wraps, a tier's hosts at a time: for
// hours a tier runs the previous round's tierlock beside today's. The two must keep the tier
// moving as well as one version does: never more than max_concurrent at once, every host run
// within its --wait, and the tier's efficiency within 0.8 of a tier of today's alone.
//
// The previous round is the commit in testdata/previous-round, built from this repository's
// own history. Each round that changes the protocol must pass against the round before it
// (docs/keys.md, "Protocol versions").
func TestMixedVersionsKeepTheTierMoving(t *testing.T) {
	t.Parallel()
	previous := buildPreviousRound(t)
	server := startServer(t, consulagent.Config{})
	admin := clientOf(t, server, "")
	const (
		hosts  = 24
		slots  = 2
		rounds = 2
		runFor = 300 * time.Millisecond
	)
	// Each measurement is two bursts of every host at once; single and mixed alternate, so
	// that a machine busy with other tests weighs on both alike.
	burst := func(t *testing.T, name string, mixed bool) (eff float64, span time.Duration) {
		t.Helper()
		if _, err := admin.KV().DeleteTree(base, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.KV().Put(kvPair("max_concurrent", fmt.Sprint(slots)), nil); err != nil {
			t.Fatal(err)
		}
		rec := newRecorder(t)
		fleet := make([]*host, hosts)
		bins := make([]string, hosts)
		for i := range fleet {
			fleet[i] = newHost(t, fmt.Sprintf("%s-%02d", name, i), server.Addr)
			bins[i] = fleet[i].bin
			if mixed && i%2 == 0 {
				bins[i] = previous
			}
		}
		start := time.Now()
		for r := 0; r < rounds; r++ {
			var wg sync.WaitGroup
			for i, h := range fleet {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cmd, o := h.command(append([]string{"run", "--tier", tier, "--wait", "120s", "--"},
						rec.script(server.Addr, h.name, runFor, 0)...)...)
					cmd.Path, cmd.Args[0] = bins[i], bins[i]
					if err := cmd.Start(); err != nil {
						t.Errorf("%s: %v", h.name, err)
						return
					}
					if err := wait(cmd, o); err != nil {
						t.Errorf("%s: %v", h.name, err)
						return
					}
					if o.code != 0 {
						t.Errorf("%s (%s) round %d: did not run within its wait: %s", h.name, filepath.Base(bins[i]), r, o)
					}
				}()
			}
			wg.Wait()
		}
		span = time.Since(start)
		starts := rec.starts(t)
		ran := 0
		for _, n := range starts {
			ran += n
		}
		for _, h := range fleet {
			if starts[h.name] != rounds {
				t.Errorf("%s ran %d times in %d rounds", h.name, starts[h.name], rounds)
			}
		}
		if p := rec.peak(t); p > slots {
			t.Errorf("%d commands ran at once; max_concurrent is %d", p, slots)
		}
		if s := tierOf(t, admin); s.Held() != 0 || len(s.Queue) != 0 {
			t.Errorf("after the bursts: %d slots held, %d waiting", s.Held(), len(s.Queue))
		}
		// The share of the slots' time spent running commands.
		eff = float64(ran) * runFor.Seconds() / (float64(slots) * span.Seconds())
		t.Logf("%s: %d of %d runs in %s, efficiency %.2f", name, ran, hosts*rounds, span.Round(time.Millisecond), eff)
		return eff, span
	}
	var single, mixed float64
	for i, m := range []bool{false, true, true, false} {
		name := "single"
		if m {
			name = "mixed"
		}
		eff, _ := burst(t, fmt.Sprintf("%s%d", name, i), m)
		if m {
			mixed += eff / 2
		} else {
			single += eff / 2
		}
	}
	t.Logf("efficiency: single-version %.2f, mixed with %s %.2f (%.2f of single)", single, previousRound(t), mixed, mixed/single)
	if mixed < 0.8*single {
		t.Errorf("a tier of two versions runs at %.2f of one version's efficiency (%.2f against %.2f): want at least 0.8", mixed/single, mixed, single)
	}
}

// previousRound is the commit of the previous round's tierlock.
func previousRound(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "previous-round"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// buildPreviousRound builds the previous round's tierlock from git history (git archive of
// its commit into a temporary directory, then go build there, with -race when today's
// tierlockBin has it), and returns the binary. -trimpath keeps the temporary directory out of
// the build's cache keys, so that the next test run finds the build cached.
func buildPreviousRound(t *testing.T) string {
	t.Helper()
	commit := previousRound(t)
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the mixed-version test builds %s from this repository's history, and needs git and a clone (not an exported tree): %v", commit, err)
	}
	root := strings.TrimSpace(string(top))
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("commit %s (testdata/previous-round) is not in this clone; a shallow clone lacks it (git fetch --unshallow): %v %s", commit, err, out)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "tierlock-"+commit)
	if err := consulagent.BuildIn(src, "./cmd/tierlock", bin, "-X main.version=0.0.0-"+commit, raceAll(), "-trimpath"); err != nil {
		t.Fatal(err)
	}
	return bin
}
