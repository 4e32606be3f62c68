package packaging_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// assignment is a NAME=value line of the environment file, commented out or not.
var assignment = regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)

func defaultFile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "packaging/default/tierlock"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// The shipped environment file sets nothing (a fresh install has no tier, so nothing runs),
// names only variables tierlock or Consul's client reads, and has each the issue lists.
func TestDefaultFileNames(t *testing.T) {
	help := command(t, hostBinary(t), "run", "--help")
	consul := map[string]bool{}
	for _, n := range []string{api.HTTPAddrEnvName, api.HTTPTokenEnvName, api.HTTPTokenFileEnvName, api.HTTPSSLEnvName,
		api.HTTPCAFile, api.HTTPCAPath, api.HTTPClientCert, api.HTTPClientKey, api.HTTPTLSServerName, api.HTTPSSLVerifyEnvName} {
		consul[n] = true
	}
	names := map[string]string{}
	for i, line := range defaultFile(t) {
		m := assignment.FindStringSubmatch(line)
		switch {
		case m == nil && line != "" && !strings.HasPrefix(line, "#"):
			t.Errorf("line %d is neither a comment nor NAME=value: %q", i+1, line)
		case m == nil:
		case m[1] == "":
			t.Errorf("line %d sets %s: the shipped file must set nothing", i+1, m[2])
		case strings.HasPrefix(m[2], "TIERLOCK_") && !strings.Contains(help, "[$"+m[2]+"]"):
			t.Errorf("line %d: tierlock run reads no %s", i+1, m[2])
		case !strings.HasPrefix(m[2], "TIERLOCK_") && !consul[m[2]]:
			t.Errorf("line %d: neither tierlock nor Consul's client reads %s", i+1, m[2])
		default:
			names[m[2]] = m[3]
		}
	}
	for _, n := range []string{"TIERLOCK_TIER", "TIERLOCK_PREFIX", "TIERLOCK_COMMAND", "TIERLOCK_WAIT", "TIERLOCK_TIMEOUT",
		"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN_FILE"} {
		if _, ok := names[n]; !ok {
			t.Errorf("no %s in the file", n)
		}
	}
	if names["TIERLOCK_INSTANCE_ID"] != "imds" {
		t.Errorf("TIERLOCK_INSTANCE_ID example %q, want imds", names["TIERLOCK_INSTANCE_ID"])
	}
}

// consulAs is a client of the test agent with token.
func consulAs(t *testing.T, token string) *api.Client {
	t.Helper()
	agent, _ := agents.Get(t)
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = agent.Addr, token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenFile makes a token with the given policies and writes it to a file, as an operator
// gives it to tierlock (CONSUL_HTTP_TOKEN_FILE).
func tokenFile(t *testing.T, policies ...string) string {
	t.Helper()
	tok := &api.ACLToken{Description: t.Name()}
	for _, p := range policies {
		tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{Name: p})
	}
	tok, _, err := consulAs(t, managementToken).ACL().TokenCreate(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok.SecretID), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// End to end with what the package ships: the environment file with every example line
// uncommented (Consul pointed at the test agent), read by tierlock as the cron line has it
// read, drives the shipped binary, with a token of the host policy the shipped binary prints
// for the file's tier and the agent's node, as the shipped example policy was printed. chef-client is a
// stand-in that records its arguments; the EC2 metadata service a local one.
func TestDefaultFileAndPolicy(t *testing.T) {
	agent, _ := agents.Get(t)
	rules, err := exec.Command(hostBinary(t), "acl-policy", "--role", "host", "--tier", "logstash/es-indexer", "--node", agent.Node).Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := consulAs(t, managementToken).ACL().PolicyCreate(&api.ACLPolicy{Name: "tierlock", Rules: string(rules)}, nil); err != nil {
		t.Fatal(err)
	}
	allowed, none := tokenFile(t, "tierlock"), tokenFile(t)

	dir := t.TempDir()
	var env []string
	for _, line := range defaultFile(t) {
		m := assignment.FindStringSubmatch(line)
		switch {
		case m == nil:
		case m[2] == "CONSUL_HTTP_ADDR":
			env = append(env, "CONSUL_HTTP_ADDR="+agent.Addr)
		case m[2] == "CONSUL_HTTP_TOKEN_FILE":
			env = append(env, "CONSUL_HTTP_TOKEN_FILE=@TOKEN_FILE@") // chosen per run below
		case m[2] == "CONSUL_CACERT": // the test agent speaks plain HTTP
		case strings.HasPrefix(m[2], "TIERLOCK_REVISION"), strings.HasPrefix(m[2], "TIERLOCK_HEALTH"):
			// The rollout has its own tests (cmd/tierlock's TestRunRollout); that run reads
			// these names, TestDefaultFileNames checks.
		default:
			env = append(env, m[2]+"="+m[3])
		}
	}
	envFile := filepath.Join(dir, "default")
	bin := filepath.Join(dir, "bin")
	chef := fmt.Sprintf("#!/bin/sh\necho \"$*\" > %s/args\nexit $(cat %s/exit)\n", dir, dir)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "chef-client"), []byte(chef), 0o755); err != nil {
		t.Fatal(err)
	}
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			fmt.Fprint(w, "test-token")
		case r.URL.Path == "/latest/meta-data/instance-id" && r.Header.Get("X-aws-ec2-metadata-token") == "test-token":
			fmt.Fprint(w, "i-0packagetest")
		default:
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}))
	defer imds.Close()

	run := func(token, exit string, flags ...string) (int, string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "exit"), []byte(exit), 0o644); err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(strings.Join(env, "\n")+"\n", "@TOKEN_FILE@", token)
		if err := os.WriteFile(envFile, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// The cron line's way to read the file: tierlock reads it itself.
		cmd := exec.Command(hostBinary(t), append([]string{"run", "--config", envFile}, flags...)...)
		cmd.Env = cleanEnv("PATH="+bin+":"+os.Getenv("PATH"),
			"AWS_EC2_METADATA_SERVICE_ENDPOINT="+imds.URL, "TIERLOCK_STATE_DIR="+filepath.Join(dir, "state"))
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	kv := consulAs(t, managementToken).KV()
	key := "chef/logstash/es-indexer/"
	keys := func() []string {
		k, _, err := kv.Keys(key, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	// Without the policy: refused, a configuration error, nothing written, nothing run.
	if code, out := run(none, "0"); code != 78 || len(keys()) != 0 {
		t.Errorf("a token without the policy: exit %d, keys %q, want 78 and none\n%s", code, keys(), out)
	}
	// With it, but outside the prefix the policy grants: refused as well.
	if code, out := run(allowed, "0", "--prefix", "elsewhere"); code != 78 {
		t.Errorf("outside the policy's prefix: exit %d, want 78\n%s", code, out)
	}
	// A full tier: the run waits in the tier's queue/, an entry bound to a Consul session, then
	// gives up after --wait leaving no trace.
	for k, v := range map[string]string{"max_concurrent": "1", "current": "1", "running/web-9": "2026-11-21T09:15:02Z"} {
		if _, err := kv.Put(&api.KVPair{Key: key + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if code, out := run(allowed, "0", "--wait", "2s"); code != 75 || !strings.Contains(out, "waiting") {
		t.Errorf("full tier: exit %d, want 75 after waiting in the queue\n%s", code, out)
	}
	if q, _, _ := kv.Keys(key+"queue/", "", nil); len(q) != 0 {
		t.Errorf("queue entries left: %q", q)
	}
	if _, err := kv.DeleteTree(key, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "args")); err == nil {
		t.Fatal("chef-client ran without a slot")
	}

	// A failing run keeps its slot, recorded with everything the file configures.
	code, out := run(allowed, "3")
	if code != 3 {
		t.Fatalf("failing run: exit %d, want 3\n%s", code, out)
	}
	if args, _ := os.ReadFile(filepath.Join(dir, "args")); string(args) != "--once --no-fork\n" {
		t.Errorf("chef-client got %q, want TIERLOCK_COMMAND's --once --no-fork", args)
	}
	p, _, err := kv.Get(key+"running/web-3", nil)
	if err != nil || p == nil {
		t.Fatalf("no slot held by web-3 after a failure: %v\n%s", err, out)
	}
	var rec struct {
		State, Command string
		InstanceID     string `json:"instance_id"`
	}
	if err := json.Unmarshal(p.Value, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.State != "failed" || rec.Command != "chef-client --once --no-fork" || rec.InstanceID != "i-0packagetest" {
		t.Errorf("record %+v", rec)
	}
	if !strings.Contains(out, `"tier":"logstash/es-indexer"`) {
		t.Errorf("no JSON log lines for the tier (TIERLOCK_LOG_FORMAT=json):\n%s", out)
	}

	// Exit 35 is a success by TIERLOCK_SUCCESS_CODES: the slot is released.
	if code, out := run(allowed, "35"); code != 0 {
		t.Errorf("exit 35 run: exit %d, want 0\n%s", code, out)
	}
	if p, _, _ := kv.Get(key+"current", nil); p == nil || string(p.Value) != "0" {
		t.Errorf("current after release: %v", p)
	}
	if p, _, _ := kv.Get(key+"running/web-3", nil); p != nil {
		t.Error("the slot was not released")
	}
}
