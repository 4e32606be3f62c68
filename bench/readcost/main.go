// Command readcost measures what one look at a tier costs Consul as the line grows: the
// read-only transaction `tierlock run` sends before it decides (get-trees of the tier's
// slots and line, see lock's treeOps), against a real agent holding M waiters, each with its
// queue entry (bound to a session) and its converged/ record, and N held slots. For each M it
// prints the answer's bytes (as sent, gzip, which Go's HTTP client asks for, and plain),
// the median wall time of one read, and the agent's CPU per read, gzip and plain.
//
//	go run ./bench/readcost -m 100,1000,2000,10000 [-server]
//
// It is the measured cause behind bench/README.md's "Flat in M": every look of protocol 2
// carries the whole line, so a burst of M hosts costs Consul O(M²). A second table measures a
// layout where a look need not: the same waiters grouped under line/<group>/, the groups listed
// with a separator, and the first group fetched.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/internal/tools/procstat"
)

func main() {
	ms := flag.String("m", "100,1000,2000,5000,10000", "numbers of waiters, comma-separated")
	n := flag.Int("n", 10, "held slots")
	reads := flag.Int("reads", 20, "reads measured at each M")
	server := flag.Bool("server", false, "a one-server cluster with its state on disk, not -dev (which indents every JSON answer)")
	flag.Parse()
	if err := run(*ms, *n, *reads, *server); err != nil {
		fmt.Fprintln(os.Stderr, "readcost:", err)
		os.Exit(1)
	}
}

func run(list string, n, reads int, server bool) error {
	bin, err := consulagent.Binary()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tierlock-readcost")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := consulagent.Config{HCL: []string{"limits { http_max_conns_per_client = 10000 }"}}
	if server {
		cfg.DataDir = filepath.Join(dir, "data")
	}
	ctx := context.Background()
	agent, err := consulagent.Launch(ctx, bin, cfg)
	if err != nil {
		return err
	}
	defer agent.Stop()
	client, err := agent.Client()
	if err != nil {
		return err
	}
	mode := "-dev"
	if server {
		mode = "one server, state on disk"
	}
	fmt.Printf("Consul %s, %d held slots, %d reads each\n", mode, n, reads)
	fmt.Printf("%8s  %14s  %14s  %12s  %16s  %19s\n", "waiters", "answer KiB gz", "answer KiB", "median ms gz", "consul CPU ms gz", "consul CPU ms plain")
	var grouped []string
	for i, f := range strings.Split(list, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || m < 0 {
			return fmt.Errorf("-m: %q is not a number of waiters", f)
		}
		base := fmt.Sprintf("chef/m%d/web/", i)
		if err := seed(client, base, m, n); err != nil {
			return err
		}
		body, err := json.Marshal(treeOps(base, "web-00000"))
		if err != nil {
			return err
		}
		url := "http://" + agent.Addr + "/v1/txn?consistent"
		plain, err := send(http.MethodPut, url, body, false)
		if err != nil {
			return err
		}
		cpu0, _ := procstat.CPU(agent.PID())
		var walls []time.Duration
		var gz int
		for range reads {
			start := time.Now()
			if gz, err = send(http.MethodPut, url, body, true); err != nil {
				return err
			}
			walls = append(walls, time.Since(start))
		}
		cpu1, _ := procstat.CPU(agent.PID())
		for range reads {
			if _, err = send(http.MethodPut, url, body, false); err != nil {
				return err
			}
		}
		cpu2, _ := procstat.CPU(agent.PID())
		sort.Slice(walls, func(a, b int) bool { return walls[a] < walls[b] })
		perRead := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(reads) }
		row, err := groupedCost(agent, client, base, m, reads)
		if err != nil {
			return err
		}
		grouped = append(grouped, row)
		fmt.Printf("%8d  %14.1f  %14.1f  %12.1f  %16.1f  %19.1f\n", m, float64(gz)/1024, float64(plain)/1024,
			float64(walls[len(walls)/2].Microseconds())/1000, perRead(cpu1-cpu0), perRead(cpu2-cpu1))
	}
	fmt.Printf("\nThe same waiters also under line/<group>/<holder>, %d to a group (a layout where a look need\nnot carry the line): listing the groups (?keys&separator=/), then fetching the first group\n", groupSize)
	fmt.Printf("%8s  %15s  %15s  %18s  %15s  %15s  %18s\n", "waiters", "groups KiB", "groups ms", "groups CPU ms", "first KiB", "first ms", "first CPU ms")
	for _, row := range grouped {
		fmt.Println(row)
	}
	return nil
}

// groupSize is how many waiters share a group in groupedCost's layout.
const groupSize = 100

// groupedCost seeds m waiters under base's line/<group>/<holder> and measures, plain, the
// listing of the groups and the fetch of the first group, reads times each: answer bytes,
// median wall time and the agent's CPU per request. Consul lists keys with a separator by
// walking every key under the prefix, so the listing's CPU is the figure to watch.
func groupedCost(agent *consulagent.Agent, c *api.Client, base string, m, reads int) (string, error) {
	var ops api.KVTxnOps
	for i := range m {
		key := fmt.Sprintf("%sline/%06d/web-%05d", base, i/groupSize, i)
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: []byte(fmt.Sprintf(`{"holder":"web-%05d","run_id":"%08x","since":"2026-12-06T04:00:00.123456789Z","hostname":"web-%05d.prod.example","pid":%d,"command":"chef-client","version":"tierlock 0.1.0","protocol":2}`, i, i, i, 10000+i))})
		if len(ops) == 128 || i == m-1 {
			if ok, resp, _, err := c.KV().Txn(ops, nil); err != nil || !ok {
				return "", fmt.Errorf("seed line: %v %+v", err, resp)
			}
			ops = nil
		}
	}
	measure := func(method, url string, body []byte) (int, float64, float64, error) {
		cpu0, _ := procstat.CPU(agent.PID())
		var walls []time.Duration
		n := 0
		for range reads {
			start := time.Now()
			var err error
			if n, err = send(method, url, body, false); err != nil {
				return 0, 0, 0, err
			}
			walls = append(walls, time.Since(start))
		}
		cpu1, _ := procstat.CPU(agent.PID())
		sort.Slice(walls, func(a, b int) bool { return walls[a] < walls[b] })
		return n, float64(walls[len(walls)/2].Microseconds()) / 1000, float64((cpu1 - cpu0).Microseconds()) / 1000 / float64(reads), nil
	}
	gb, gms, gcpu, err := measure(http.MethodGet, "http://"+agent.Addr+"/v1/kv/"+base+"line/?keys&separator=/&consistent", nil)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal([]map[string]any{{"KV": map[string]any{"Verb": "get-tree", "Key": base + "line/000000/"}}})
	if err != nil {
		return "", err
	}
	fb, fms, fcpu, err := measure(http.MethodPut, "http://"+agent.Addr+"/v1/txn?consistent", body)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%8d  %15.1f  %15.1f  %18.2f  %15.1f  %15.1f  %18.2f", m, float64(gb)/1024, gms, gcpu, float64(fb)/1024, fms, fcpu), nil
}

// treeOps are the get-trees of a host's one-request look (lock's treeOps).
func treeOps(base, holder string) []map[string]any {
	var ops []map[string]any
	for _, k := range []string{"max_concurrent", "current", "max_saved", "rollout", "running/", "queue/", "converged/" + holder} {
		ops = append(ops, map[string]any{"KV": map[string]any{"Verb": "get-tree", "Key": base + k}})
	}
	return ops
}

// send makes one request and returns the bytes of the answer as they came over the wire:
// gzip-compressed when gzip asks for it, plain otherwise.
func send(method, url string, body []byte, gzip bool) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	// Set by hand, Go's transport leaves the answer compressed, as it came.
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return int(n), err
}

// seed writes m waiters (entries bound to one session, records as tierlock writes them) and
// n held slots under base, 128 operations to a transaction.
func seed(c *api.Client, base string, m, n int) error {
	id, _, err := c.Session().Create(&api.SessionEntry{TTL: "24h", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		return err
	}
	var ops api.KVTxnOps
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		ok, resp, _, err := c.KV().Txn(ops, nil)
		if err == nil && !ok {
			err = fmt.Errorf("seed refused: %+v", resp.Errors)
		}
		ops = nil
		return err
	}
	add := func(op *api.KVTxnOp) error {
		ops = append(ops, op)
		if len(ops) == 128 {
			return flush()
		}
		return nil
	}
	for i := range m {
		h := fmt.Sprintf("web-%05d", i)
		entry := fmt.Sprintf(`{"holder":%q,"run_id":"%08x","instance_id":"i-%017x","node":%q,"since":"2026-12-06T04:00:00.123456789Z","converged_at":"2026-12-05T18:%02d:31.902018836Z","hostname":"%s.prod.example","pid":%d,"command":"chef-client","version":"tierlock 0.1.0","protocol":2}`,
			h, i, i, h, i%60, h, 10000+i)
		conv := fmt.Sprintf(`{"holder":%q,"converged_at":"2026-12-05T18:%02d:31.902018836Z","run_id":"%08x","duration_seconds":41.2,"instance_id":"i-%017x","node":%q}`, h, i%60, i, i, h)
		if err := add(&api.KVTxnOp{Verb: api.KVLock, Key: base + "queue/" + h, Value: []byte(entry), Session: id}); err != nil {
			return err
		}
		if err := add(&api.KVTxnOp{Verb: api.KVSet, Key: base + "converged/" + h, Value: []byte(conv)}); err != nil {
			return err
		}
	}
	for i := range n {
		h := fmt.Sprintf("busy-%03d", i)
		rec := fmt.Sprintf(`{"holder":%q,"hostname":"%s.prod.example","instance_id":"i-0abc123","node":%q,"pid":4242,"state":"running","started_at":"2026-12-06T04:00:00Z","updated_at":"2026-12-06T04:00:00Z","exit_code":null,"attempts":1,"command":"chef-client","run_id":"7f3a9c1e","version":"tierlock 0.1.0","protocol":2}`, h, h, h)
		if err := add(&api.KVTxnOp{Verb: api.KVSet, Key: base + "running/" + h, Value: []byte(rec)}); err != nil {
			return err
		}
	}
	if err := add(&api.KVTxnOp{Verb: api.KVSet, Key: base + "max_concurrent", Value: []byte(strconv.Itoa(n))}); err != nil {
		return err
	}
	if err := add(&api.KVTxnOp{Verb: api.KVSet, Key: base + "current", Value: []byte(strconv.Itoa(n))}); err != nil {
		return err
	}
	return flush()
}
