package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit"
	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
	"github.com/tierlock/tierlock/lock"
	"github.com/tierlock/tierlock/lock/schema"
)

// Every Consul request of run, release, repair, reap and set-max is faulted in turn, with every
// kind of fault, once: Consul is back at once, so each command must end as it does without the
// fault. What a command cannot know after a lost answer (did my write apply?) it must find out
// by reading, never by guessing: a re-sent acquire takes no second slot, a re-sent release
// frees no other run's slot, and current always equals the number of running/ keys.

var faultKinds = []int{http.StatusTooManyRequests, http.StatusInternalServerError, faultproxy.Reset,
	faultproxy.Stall, faultproxy.DropAfterCommit, faultproxy.LateCommit}

func faultName(f int) string {
	if k, ok := faultproxy.Kinds[f]; ok {
		return k
	}
	return fmt.Sprint(f)
}

// faultScenario is one command, run once per (request, fault).
type faultScenario struct {
	name string
	// keys are stored before the command, relative to the test's prefix ("prod/web/current").
	keys map[string]string
	// args is the command line; m is the marker file the command (if any) writes to.
	args func(t *testing.T, m string) []string
	// during, if set, runs beside the command until done is closed.
	during func(t *testing.T, done <-chan struct{})
	// check judges the outcome, which must be the same as without the fault; slow is set when
	// the fault held a blocking query, which may cost a waiting run its --wait.
	check func(t *testing.T, r result, m string, slow bool)
}

// A failed slot of another host that every scenario must leave alone.
const bystander = `{"holder":"web-9","instance_id":"i-0live","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":1,"attempts":1,"run_id":"bbbb0009"}`

func failedRecord(holder, instance, runID string) string {
	return fmt.Sprintf(`{"holder":%q,"instance_id":%q,"state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":%q}`,
		holder, instance, runID)
}

// heldCommand is a command that writes "held" to m if web-1 holds a slot in the test's tier
// while it runs, "NOSLOT" if not, then exits with code. It asks Consul directly, not through
// the proxy.
func heldCommand(t *testing.T, m string, code int) []string {
	key := testkit.Prefix(t) + "/" + tier + "/running/web-1"
	return []string{"sh", "-c", `if "$0" kv get -http-addr="$1" "$2" >/dev/null 2>&1; then echo held >> "$3"; else echo NOSLOT >> "$3"; fi; exit "$4"`,
		consulagent.Need(t), agentAddr(t), key, m, fmt.Sprint(code)}
}

// runs counts the command's runs from its marker file, failing on one without a slot.
func runs(t *testing.T, m string) int {
	t.Helper()
	b, err := os.ReadFile(m)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	for _, l := range lines {
		if l != "held" {
			t.Errorf("the command ran without a slot (%q)", b)
		}
	}
	return len(lines)
}

func runScenario(code int, extra ...string) func(t *testing.T, m string) []string {
	return func(t *testing.T, m string) []string {
		args := append([]string{"run", "--tier", tier, "--holder", "web-1", "--consul-timeout", "9s"}, extra...)
		return append(append(args, "--"), heldCommand(t, m, code)...)
	}
}

// released checks that web-1 ran once and holds no slot.
func released(t *testing.T, r result, m string, slow bool) {
	if slow && r.code == 75 && runs(t, m) == 0 {
		return // a held watch used up --wait: skipped, nothing ran
	}
	wantCode(t, r, 0)
	if n := runs(t, m); n != 1 {
		t.Errorf("the command ran %d times", n)
	}
	if _, ok := getRecord(t, "web-1"); ok {
		t.Errorf("web-1 still holds a slot\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "already freed") {
		t.Errorf("its own release, answered too late, taken for someone else's:\n%s", r.stderr)
	}
}

// rolloutOf reads the tier's rollout record.
func rolloutOf(t *testing.T) (r struct {
	Revision, State                      string
	Step, Admitted, Succeeded, Successes int
	Failures                             int
}) {
	t.Helper()
	p, _, err := agents.Client(t).KV().Get(testkit.Prefix(t)+"/"+tier+"/rollout", &api.QueryOptions{RequireConsistent: true})
	if err != nil || p == nil {
		t.Fatalf("no rollout record: %v", err)
	}
	if err := json.Unmarshal(p.Value, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

var faultScenarios = []faultScenario{{
	// A mover's take admits it as the canary and its release counts one success, whatever
	// answer was lost: a re-sent write must neither admit twice nor count twice.
	name: "a mover's canary succeeds",
	keys: map[string]string{"prod/web/max_concurrent": "2", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args: runScenario(0, "--revision", "r2"),
	check: func(t *testing.T, r result, m string, slow bool) {
		released(t, r, m, slow)
		if ro := rolloutOf(t); ro.Revision != "r2" || ro.State != "rolling" || ro.Step != 0 || ro.Admitted != 1 || ro.Succeeded != 1 || ro.Successes != 1 {
			t.Errorf("rollout %+v, want r2 at its canary, admitted once, one success\n%s", ro, r.stderr)
		}
	},
}, {
	// A mover's failure is counted once and halts the revision (limit 1).
	name: "a mover's canary fails",
	keys: map[string]string{"prod/web/max_concurrent": "2", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args: runScenario(3, "--revision", "r2"),
	check: func(t *testing.T, r result, m string, _ bool) {
		wantCode(t, r, 3)
		if n := runs(t, m); n != 1 {
			t.Errorf("the command ran %d times", n)
		}
		if ro := rolloutOf(t); ro.State != "halted" || ro.Failures != 1 || ro.Admitted != 1 {
			t.Errorf("rollout %+v, want halted after one failure\n%s", ro, r.stderr)
		}
	},
}, {
	name:  "run takes and releases",
	keys:  map[string]string{"prod/web/max_concurrent": "2", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args:  runScenario(0),
	check: released,
}, {
	name: "run fails and keeps its slot",
	keys: map[string]string{"prod/web/max_concurrent": "2", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args: runScenario(3),
	check: func(t *testing.T, r result, m string, _ bool) {
		wantCode(t, r, 3)
		if n := runs(t, m); n != 1 {
			t.Errorf("the command ran %d times", n)
		}
		// One fresh slot: a re-sent acquire must not count as a re-entry.
		if rec, ok := getRecord(t, "web-1"); !ok || rec.State != "failed" || rec.Attempts != 1 || rec.ExitCode == nil || *rec.ExitCode != 3 {
			t.Errorf("record %+v (present %v), want failed, attempt 1, exit 3\n%s", rec, ok, r.stderr)
		}
	},
}, {
	name: "run re-enters and releases",
	keys: map[string]string{"prod/web/max_concurrent": "2", "prod/web/current": "2", "prod/web/running/web-9": bystander,
		"prod/web/running/web-1": failedRecord("web-1", "", "aaaa0001")},
	args:  runScenario(0),
	check: released,
}, {
	name: "run waits in the queue",
	keys: map[string]string{"prod/web/max_concurrent": "1", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args: runScenario(0, "--wait", "10s"),
	// Once web-1 queues, web-9's slot is freed (as an operator would), so web-1 moves up.
	during: func(t *testing.T, done <-chan struct{}) {
		base := testkit.Prefix(t) + "/" + tier + "/"
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if p, _, err := agents.Client(t).KV().Get(base+"queue/web-1", nil); err != nil || p == nil {
				continue
			}
			ok, _, _, err := agents.Client(t).KV().Txn(api.KVTxnOps{
				{Verb: api.KVDelete, Key: base + "running/web-9"},
				{Verb: api.KVSet, Key: base + "current", Value: []byte("0")},
			}, nil)
			if err != nil || !ok {
				t.Errorf("freeing web-9: %v", err)
			}
			return
		}
	},
	check: released,
}, {
	name: "release",
	keys: map[string]string{"prod/web/current": "2", "prod/web/running/web-9": bystander,
		"prod/web/running/web-3": failedRecord("web-3", "i-0dead", "aaaa0003")},
	args: func(*testing.T, string) []string {
		return []string{"release", "--tier", tier, "--holder", "web-3", "--consul-timeout", "9s"}
	},
	check: func(t *testing.T, r result, _ string, _ bool) {
		wantCode(t, r, 0)
		if !strings.Contains(r.stdout, "released web-3 (failed, attempt 1") {
			t.Errorf("stdout %q, want the slot released\n%s", r.stdout, r.stderr)
		}
		if _, ok := getRecord(t, "web-3"); ok {
			t.Error("web-3 still holds its slot")
		}
	},
}, {
	name: "repair",
	keys: map[string]string{"prod/web/current": "5", "prod/web/running/web-9": bystander},
	args: func(*testing.T, string) []string {
		return []string{"repair", "--tier", tier, "--consul-timeout", "9s"}
	},
	check: func(t *testing.T, r result, _ string, _ bool) {
		wantCode(t, r, 0)
		if !strings.Contains(r.stdout, "current 5 -> 1") {
			t.Errorf("stdout %q, want current 5 -> 1\n%s", r.stdout, r.stderr)
		}
	},
}, {
	name: "reap",
	keys: map[string]string{"prod/web/current": "2", "prod/web/running/web-9": bystander,
		"prod/web/running/web-3": failedRecord("web-3", "i-0dead", "aaaa0003"),
		"prod/db/current":        "1", "prod/db/running/web-3": failedRecord("web-3", "i-0dead", "aaaa0013")},
	args: func(*testing.T, string) []string {
		return []string{"reap", "--instance-id", "i-0dead", "--consul-timeout", "9s"}
	},
	check: func(t *testing.T, r result, _ string, _ bool) {
		wantCode(t, r, 0)
		for _, want := range []string{"freed prod/db web-3", "freed prod/web web-3"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout %q lacks %q\n%s", r.stdout, want, r.stderr)
			}
		}
		if got := strings.Join(slots(t), " "); got != "prod/web:web-9" {
			t.Errorf("slots left: %s, want only the bystander's", got)
		}
	},
}, {
	name: "set-max",
	keys: map[string]string{"prod/web/max_concurrent": "1", "prod/web/current": "1", "prod/web/running/web-9": bystander},
	args: func(*testing.T, string) []string {
		return []string{"set-max", "--tier", tier, "--consul-timeout", "9s", "3"}
	},
	check: func(t *testing.T, r result, _ string, _ bool) {
		wantCode(t, r, 0)
		if !strings.Contains(r.stdout, "max_concurrent 1 -> 3") || dumpKey(t, "max_concurrent") != "3" {
			t.Errorf("stdout %q, max_concurrent %q, want 1 -> 3\n%s", r.stdout, dumpKey(t, "max_concurrent"), r.stderr)
		}
	},
}}

func TestFaultEveryRequest(t *testing.T) {
	for _, sc := range faultScenarios {
		t.Run(sc.name, func(t *testing.T) {
			// Scenarios side by side too, so that one's slowest cases do not leave the
			// machine idle: each has its own prefix, and the cases mostly wait.
			t.Parallel()
			// Without faults first, to learn the command's requests.
			reqs := runFaulted(t, sc, 0, faultproxy.Pass)
			t.Logf("%d requests: %s", len(reqs), strings.Join(reqs, ", "))
			for n := 1; n <= len(reqs); n++ {
				for _, f := range faultKinds {
					t.Run(fmt.Sprintf("%d %s/%s", n, reqs[n-1], faultName(f)), func(t *testing.T) {
						t.Parallel()
						runFaulted(t, sc, n, f)
					})
				}
			}
		})
	}
}

// runFaulted runs sc with fault f on its nth request (none if n is 0), checks the outcome and
// the invariant, and returns the requests the command made.
func runFaulted(t *testing.T, sc faultScenario, n, f int) []string {
	for k, v := range sc.keys {
		if _, err := agents.Client(t).KV().Put(&api.KVPair{Key: testkit.Prefix(t) + "/" + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	bystanderBefore := dumpKey(t, "running/web-9")
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	var mu sync.Mutex
	var reqs []string
	slow := false
	p.SetRule(func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		reqs = append(reqs, r.Method+" "+r.URL.Path)
		if len(reqs) != n {
			return faultproxy.Pass
		}
		slow = r.URL.Query().Has("index") && (f == faultproxy.Stall || f == faultproxy.LateCommit)
		return f
	})
	m := marker(t, "ran")
	cmd := cliOf(t, plainBin(t), p.Addr, sc.args(t, m)...)
	done := make(chan struct{})
	var wg sync.WaitGroup
	if sc.during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); sc.during(t, done) }()
	}
	r := run(t, cmd)
	close(done)
	wg.Wait()
	// A late commit lands after its sender gave up: wait for it before judging.
	if !p.Settle(30 * time.Second) {
		t.Error("the proxy still holds requests 30s after the command ended")
	}
	mu.Lock()
	got, wasSlow := append([]string(nil), reqs...), slow
	mu.Unlock()
	if n > 0 && p.Injected() == 0 && len(got) < n {
		// A wait in the queue makes as many requests as the others' timing asks for: this
		// run ended before the nth the fault was for. Nothing to judge.
		t.Logf("this run made %d requests, fewer than %d: no fault to inject", len(got), n)
		return got
	}
	if n > 0 && p.Injected() != 1 {
		t.Fatalf("%d faults injected, want 1", p.Injected())
	}
	sc.check(t, r, m, wasSlow)
	slots(t) // checks the invariant in every tier
	if after := dumpKey(t, "running/web-9"); sc.name != "run waits in the queue" && after != bystanderBefore {
		t.Errorf("the bystander's slot changed: %q -> %q", bystanderBefore, after)
	}
	testkit.Eventually(t, "queue entries to go", func() bool { return !strings.Contains(dump(t), "/queue/") })
	if t.Failed() {
		t.Logf("stdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	return got
}

// A release whose answer was lost is sent again; in between, the host started a new run and
// took a fresh slot. The retry must free only the run the operator released, not the new one.
func TestReleaseResentAfterLostAnswer(t *testing.T) {
	put(t, "current", "1")
	put(t, "running/web-3", failedRecord("web-3", "i-0abc", "aaaa0003"))
	sem, err := lock.New(agents.Client(t).KV(), lock.Options{Prefix: testkit.Prefix(t), Tier: tier, DefaultMax: 5})
	if err != nil {
		t.Fatal(err)
	}
	p := faultproxy.New(agentAddr(t))
	defer p.Close()
	var mu sync.Mutex
	dropped, retook := false, false
	p.SetRule(func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !dropped && faultproxy.IsWriteTxn(r):
			dropped = true
			return faultproxy.DropAfterCommit
		case dropped && !retook:
			// web-3's timer fires: a new run takes a fresh slot before the retry reads.
			retook = true
			if _, err := sem.Acquire(context.Background(), lock.Request{Record: schema.Record{Holder: "web-3", RunID: "cccc0003"}}); err != nil {
				t.Errorf("the new run of web-3: %v", err)
			}
		}
		return faultproxy.Pass
	})
	r := run(t, cli(t, p.Addr, "release", "--tier", tier, "--holder", "web-3", "--consul-timeout", "20s"))
	wantCode(t, r, 0)
	mu.Lock()
	defer mu.Unlock()
	if !retook {
		t.Fatal("the release was not retried")
	}
	if rec, ok := getRecord(t, "web-3"); !ok || rec.RunID != "cccc0003" {
		t.Errorf("the retried release freed the new run's slot (web-3: %+v, present %v)\nstdout: %s\nstderr: %s", rec, ok, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "released web-3") {
		t.Errorf("stdout %q, want the release reported", r.stdout)
	}
	testkit.CheckInvariant(t, agents.Client(t), testkit.Prefix(t))
}
