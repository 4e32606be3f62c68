package reliability_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/testkit/faultproxy"
)

// Hostile names on the command line and hostile values in Consul: key-path tricks (.., /,
// NUL), invalid UTF-8, oversized values. Each gets a clear error that names it (exit 78),
// nothing is written, nothing runs, and a bad name is refused before any request to Consul.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	server := startServer(t, consulagent.Config{})
	admin := clientOf(t, server, "")
	p := faultproxy.New(server.Addr)
	defer p.Close()
	var mu sync.Mutex
	var requests []string
	asked := func() []string { mu.Lock(); defer mu.Unlock(); r := requests; requests = nil; return r }
	p.SetRule(func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		return faultproxy.Pass
	})
	rec := newRecorder(t)
	h := newHost(t, "web-1", p.Addr)
	runArgs := func(flags ...string) []string {
		return append(append([]string{"run"}, flags...), append([]string{"--"}, rec.script(server.Addr, "web-1", 0, 0)...)...)
	}

	t.Run("names", func(t *testing.T) {
		long := strings.Repeat("a", 254)
		for _, tc := range []struct {
			args []string
			says string // part of the message: the value, as quoted
		}{
			{runArgs("--tier", "prod/../web"), `"prod/../web"`},
			{runArgs("--tier", "../web"), `".."`},
			{runArgs("--tier", "prod/web/running"), `"prod/web/running"`},
			{runArgs("--tier", "prod//web"), `"prod//web"`},
			{runArgs("--tier", "/web"), `is empty`},
			{runArgs("--tier", "prod/"), `is empty`},
			{runArgs("--tier", "prod/.."), `".."`},
			{runArgs("--tier", "prod/w\xffb"), `"w\xffb" has byte 0xff at byte 1`},
			{runArgs("--tier", tier, "--holder", ".."), `".."`},
			{runArgs("--tier", tier, "--holder", "a/b"), `"a/b"`},
			{runArgs("--tier", tier, "--holder", "web 3"), `"web 3"`},
			{runArgs("--tier", tier, "--holder", "wéb"), `"wéb" has 'é' at byte 1`},
			{runArgs("--tier", tier, "--holder", "web\x01"), `"web\x01"`},
			{runArgs("--tier", tier, "--holder", long), "longer than 253"},
			{runArgs("--tier", tier, "--prefix", "chef/../x"), `".."`},
			{runArgs("--tier", tier, "--prefix", "chef//x"), "is empty"},
			{runArgs("--tier", tier, "--instance-id", "i-0abc/../x"), `"i-0abc/../x"`},
			{[]string{"release", "--tier", tier, "--holder", "../web-3"}, `"../web-3"`},
			{[]string{"set-max", "--tier", "prod/../x", "3"}, `"prod/../x"`},
			{[]string{"reap", "--holder", "web-3/.."}, `"web-3/.."`},
			{[]string{"reap", "--instance-id", ".."}, `".."`},
			{[]string{"check", "--prefix", "../chef"}, `".."`},
		} {
			asked()
			o := h.run(t, tc.args...)
			want := 78
			if tc.args[0] == "check" {
				want = 3
			}
			if o.code != want || !strings.Contains(o.stderr.String()+o.stdout.String(), tc.says) {
				t.Errorf("%q: want exit %d naming %s, got %s", tc.args[:3], want, tc.says, o)
			}
			if r := asked(); len(r) > 0 {
				t.Errorf("%q: asked Consul %q before refusing", tc.args[:3], r)
			}
		}
	})

	t.Run("stored values", func(t *testing.T) {
		huge := strings.Repeat("9", 300<<10) // Consul's own limit is 512 KiB
		bigRecord := `{"holder":"web-9","state":"running","started_at":"2026-11-21T09:15:02Z","command":"` + strings.Repeat("x", 100<<10) + `"}`
		for _, tc := range []struct {
			name string
			keys map[string]string // under the tier
			says string            // the key the message names
		}{
			{"max_concurrent oversized", map[string]string{"max_concurrent": huge}, "max_concurrent"},
			{"max_concurrent invalid UTF-8", map[string]string{"max_concurrent": "2\xff"}, "max_concurrent"},
			{"max_concurrent with NUL", map[string]string{"max_concurrent": "2\x00"}, "max_concurrent"},
			{"current invalid UTF-8", map[string]string{"current": "\xfe\xff"}, "current"},
			{"record oversized", map[string]string{"current": "1", "running/web-9": bigRecord}, "running/web-9"},
			{"record invalid UTF-8", map[string]string{"current": "1", "running/web-9": "{\"holder\":\"web-9\xff\"}"}, "running/web-9"},
			{"record naming another path", map[string]string{"current": "1", "running/web-9": `{"holder":"../../web-9","state":"running","started_at":"2026-11-21T09:15:02Z"}`}, "running/web-9"},
			{"record state with NUL", map[string]string{"current": "1", "running/web-9": `{"state":"running\u0000","started_at":"2026-11-21T09:15:02Z"}`}, "running/web-9"},
			{"key ..", map[string]string{"current": "1", "running/..": "1700000000"}, "running/.."},
			{"key with NUL", map[string]string{"current": "1", "running/web\x009": "1700000000"}, `running/web`},
			{"key deeper", map[string]string{"current": "1", "running/a/b": "1700000000"}, "running/a/b"},
			{"key invalid UTF-8", map[string]string{"current": "1", "running/w\xffb": "1700000000"}, "running/w"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := admin.KV().DeleteTree("chef/", nil); err != nil {
					t.Fatal(err)
				}
				var ops api.KVTxnOps
				for k, v := range tc.keys {
					ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: base + k, Value: []byte(v)})
				}
				if ok, resp, _, err := admin.KV().Txn(ops, nil); err != nil || !ok {
					t.Fatalf("store %q: %v %+v", tc.name, err, resp)
				}
				before := aclDump(t, admin)
				o := h.run(t, runArgs("--tier", tier)...)
				if o.code != 78 || !strings.Contains(o.stderr.String(), tc.says) {
					t.Errorf("want exit 78 naming %s, got %s", tc.says, o)
				}
				if len(o.stderr.String()) > 8<<10 {
					t.Errorf("the error is %d bytes long", len(o.stderr.String()))
				}
				if after := aclDump(t, admin); after != before {
					t.Error("Consul changed")
				}
				st := h.run(t, "check", "--tier", tier)
				if st.code != 2 || !strings.Contains(st.stdout.String(), "CRITICAL") {
					t.Errorf("check: want CRITICAL, got %s", st)
				}
			})
		}
		if n := rec.starts(t)["web-1"]; n != 0 {
			t.Errorf("the command ran %d times", n)
		}
	})
}
