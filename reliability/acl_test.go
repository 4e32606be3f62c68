package reliability_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tierlock/tierlock/internal/testkit/consulagent"
	"github.com/tierlock/tierlock/lock/schema"
)

// aclManagement is the ACL agent's management token (also the agent's own, for its
// anti-entropy); tierlock is never given it.
const aclManagement = "5c3f4e2a-8b1d-4c6e-9f70-acl0management"

// aclCase is one command with one token.
type aclCase struct {
	name  string
	token string   // the policy's token name: tierlock, tierlock-reaper, tierlock-check, none, unknown
	args  []string // the command line; run's command touches the marker
	code  int      // its exit code with the right token
	out   string   // what stdout or stderr says then
	keys  string   // max_concurrent and current stored before it; default "2 1"
}

// Consul with ACLs on and default deny. The policies `tierlock acl-policy` prints (as the
// shipped examples in packaging/consul/ were printed) are enough for every command of their
// role; a token without them, or one Consul does not know, is refused with a message that
// names the missing permission, exits non-zero, changes nothing and runs nothing. The token itself never shows: not on the command line (tierlock has no flag for
// it), not in any log line at any level, not in status output, not in what is stored.
func TestACLs(t *testing.T) {
	t.Parallel()
	server, admin := aclServer(t)
	tokens := map[string]string{"unknown": "0b7e4a1c-9d2f-4e8a-b6c3-notatokenatall", "none": newToken(t, admin)}
	for p, args := range map[string][]string{
		"tierlock":          {"--role", "host", "--tier", tier, "--node", server.Node},
		"tierlock-operator": {"--role", "operator"},
		"tierlock-reaper":   {"--role", "reaper"},
		"tierlock-check":    {"--role", "monitor"},
	} {
		createPolicy(t, admin, p, args...)
		tokens[p] = newToken(t, admin, p)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	cases := []aclCase{
		{"run", "tierlock", []string{"run", "--tier", tier, "--log-level", "debug", "--", "touch", marker}, 0, "slot acquired", ""},
		{"run waiting in the queue", "tierlock", []string{"run", "--tier", tier, "--log-level", "debug", "--wait", "1s", "--", "touch", marker}, 75, "waiting", "1 1"},
		// A dry run only reads: with a token that may not, it exits 78 as a real run does,
		// never 75 (which the unit counts as success, hiding the refusal).
		{"run --dry-run", "tierlock", []string{"run", "--tier", tier, "--dry-run", "--", "touch", marker}, 0, "would take a slot", ""},
		{"status", "tierlock-check", []string{"status", "--format", "json"}, 0, `"holder": "web-3"`, ""},
		{"check", "tierlock-check", []string{"check", "-v"}, 2, "TIERLOCK CRITICAL", ""},
		{"set-max", "tierlock-operator", []string{"set-max", "--tier", tier, "3"}, 0, "-> 3", ""},
		{"disable", "tierlock-operator", []string{"disable", "--tier", tier}, 0, "-> 0 (disabled)", ""},
		{"enable", "tierlock-operator", []string{"enable", "--tier", tier, "4"}, 0, "-> 4", ""},
		{"release", "tierlock-operator", []string{"release", "--tier", tier, "--holder", "web-3"}, 0, "released web-3", ""},
		{"repair", "tierlock-operator", []string{"repair", "--tier", tier}, 0, "current 5 -> 1", "2 5"},
		{"reap by instance", "tierlock-reaper", []string{"reap", "--instance-id", "i-0dead", "--log-level", "debug"}, 0, "freed prod/web web-3", ""},
		{"reap by the catalog", "tierlock-reaper", []string{"reap", "--consul-catalog", "--grace", "0s", "--log-level", "debug"}, 0, "freed prod/web web-3", ""},
	}
	// Which tokens must be refused, and the permission the refusal names.
	refused := func(c aclCase) map[string]string {
		r := map[string]string{"unknown": "does not know the token", "none": "lacks key:"}
		switch c.token {
		case "tierlock":
			r["tierlock-check"] = "lacks key:write"
			switch c.name {
			case "run waiting in the queue":
				r["tierlock-check"] = "lacks session:write"
			case "run --dry-run":
				delete(r, "tierlock-check") // reading is all it does, and the monitor may
			}
		case "tierlock-operator":
			r["tierlock-check"] = "lacks key:write"
			// A host may free slots and fix current in its own tier (that is how its runs
			// release), never change the tier's settings.
			if c.name == "set-max" || c.name == "disable" || c.name == "enable" {
				r["tierlock"] = "lacks key:write"
			}
		case "tierlock-reaper":
			r["tierlock-check"] = "lacks key:write"
			if c.name == "reap by the catalog" {
				r["tierlock"], r["tierlock-check"] = "lacks node:read", "lacks node:read"
			}
		case "tierlock-check":
			r["none"] = "lacks key:read"
		}
		return r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for token, says := range refused(c) {
				aclSetup(t, admin, c.keys)
				before := aclDump(t, admin)
				o := aclRun(t, server, tokens, token, c.args)
				if o.code == 0 || (c.args[0] != "check" && o.code != 78) || (c.args[0] == "check" && o.code != 3) {
					t.Errorf("with token %s: want a refusal (78, check 3), got %s", token, o)
				}
				if all := o.stdout.String() + o.stderr.String(); !strings.Contains(all, says) {
					t.Errorf("with token %s: the refusal does not say %q:\n%s", token, says, o)
				}
				if after := aclDump(t, admin); after != before {
					t.Errorf("with token %s: Consul changed:\nbefore %s\nafter  %s", token, before, after)
				}
				if _, err := os.Stat(marker); err == nil {
					t.Errorf("with token %s: the command ran", token)
					os.Remove(marker)
				}
				noSecrets(t, o, tokens)
			}
			aclSetup(t, admin, c.keys)
			o := aclRun(t, server, tokens, c.token, c.args)
			if o.code != c.code || !strings.Contains(o.stdout.String()+o.stderr.String(), c.out) {
				t.Errorf("with the shipped policy %s: want exit %d and %q, got %s", c.token, c.code, c.out, o)
			}
			if strings.Contains(o.stderr.String(), "lacks") {
				t.Errorf("the shipped policy %s lacks something:\n%s", c.token, o)
			}
			noSecrets(t, o, tokens)
			checkTiers(t, admin)
			for _, secret := range tokens {
				if d := aclDump(t, admin); strings.Contains(d, secret) {
					t.Errorf("a token is stored in Consul:\n%s", d)
				}
			}
			os.Remove(marker)
		})
	}

	// No flag takes a token: the usual spellings are refused without echoing the value.
	for _, args := range [][]string{
		{"run", "--tier", tier, "--token", tokens["tierlock"], "--", "true", ""},
		{"status", "--token=" + tokens["tierlock"], ""},
		{"release", "-consul-token", tokens["tierlock"], "--tier", tier, "--holder", "web-3", ""},
		{"reap", "--http-token", tokens["tierlock"], "--holder", "web-3", ""},
	} {
		o := aclRun(t, server, tokens, "none", args)
		if o.code != 78 || !strings.Contains(o.stderr.String(), "never given on the command line") {
			t.Errorf("%q: want 78 and a refusal, got %s", args, o)
		}
		noSecrets(t, o, tokens)
	}
}

// aclServer starts a server with ACLs on and default deny, and returns it with a client of
// its management token.
func aclServer(t *testing.T) (*consulagent.Agent, *api.Client) {
	t.Helper()
	server := startServer(t, consulagent.Config{HCL: []string{fmt.Sprintf(
		`acl { enabled = true, default_policy = "deny", down_policy = "deny", tokens { initial_management = %q, agent = %q } }`,
		aclManagement, aclManagement)}})
	return server, clientOf(t, server, aclManagement)
}

// createPolicy creates the policy `tierlock acl-policy ARGS` prints, named name.
func createPolicy(t *testing.T, admin *api.Client, name string, args ...string) {
	t.Helper()
	rules, err := exec.Command(tierlockBin, append([]string{"acl-policy"}, args...)...).Output()
	if err != nil {
		t.Fatalf("tierlock acl-policy %q: %v", args, err)
	}
	if _, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: string(rules)}, nil); err != nil {
		t.Fatalf("policy %s:\n%s\n%v", name, rules, err)
	}
}

// newToken creates a token with the given policies and returns its secret.
func newToken(t *testing.T, admin *api.Client, policies ...string) string {
	t.Helper()
	tok := &api.ACLToken{Description: "test " + strings.Join(policies, ",")}
	for _, p := range policies {
		tok.Policies = append(tok.Policies, &api.ACLTokenPolicyLink{Name: p})
	}
	tok, _, err := admin.ACL().TokenCreate(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// aclSetup stores a tier with a failed slot of web-3 (instance i-0dead, on a node that left
// the catalog), and max_concurrent and current as keys says ("MAX CURRENT", default "2 1").
func aclSetup(t *testing.T, admin *api.Client, keys string) {
	t.Helper()
	if keys == "" {
		keys = "2 1"
	}
	maxc, cur, _ := strings.Cut(keys, " ")
	kv := admin.KV()
	if _, err := kv.DeleteTree("chef/", nil); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"max_concurrent": maxc, "current": cur,
		"running/web-3": `{"holder":"web-3","instance_id":"i-0dead","node":"gone-node","state":"failed","started_at":"2026-11-21T09:15:02Z","exit_code":2,"attempts":1,"run_id":"aaaa0003"}`,
	} {
		if _, err := kv.Put(&api.KVPair{Key: base + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// aclDump is every key under chef/ with its value and ModifyIndex.
func aclDump(t *testing.T, admin *api.Client) string {
	t.Helper()
	d, err := consulagent.Dump(admin, "chef/")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// aclRun runs a command on host web-1 with the named token: the run and reap cases read it
// from a file (CONSUL_HTTP_TOKEN_FILE), the others from CONSUL_HTTP_TOKEN.
func aclRun(t *testing.T, server *consulagent.Agent, tokens map[string]string, token string, args []string) *outcome {
	t.Helper()
	env := "CONSUL_HTTP_TOKEN=" + tokens[token]
	if args[0] == "run" || args[0] == "reap" {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(tokens[token]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env = "CONSUL_HTTP_TOKEN_FILE=" + path
	}
	return newHost(t, "web-1", server.Addr, env).run(t, args...)
}

// noSecrets fails the test if any token's secret, or a telling part of it, is in the output.
func noSecrets(t *testing.T, o *outcome, tokens map[string]string) {
	t.Helper()
	all := o.stdout.String() + o.stderr.String()
	for name, secret := range tokens {
		if strings.Contains(all, secret) || strings.Contains(all, secret[:13]) || strings.Contains(all, secret[len(secret)-12:]) {
			t.Errorf("the %s token's secret is in the output:\n%s", name, o)
		}
	}
}

// With ACLs on, an operator's note names the token it wrote with, as Consul describes it (its
// AccessorID and Description, never its secret): a name Consul vouches for, unlike the user
// the environment claims.
func TestNoteNamesTheToken(t *testing.T) {
	t.Parallel()
	server, admin := aclServer(t)
	createPolicy(t, admin, "tierlock-operator", "--role", "operator")
	secret := newToken(t, admin, "tierlock-operator")
	self, _, err := clientOf(t, server, secret).ACL().TokenReadSelf(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(t, "bastion", server.Addr, "CONSUL_HTTP_TOKEN="+secret, "SUDO_USER=alice", "USER=mallory")
	for _, args := range [][]string{{"disable", "--reason", "incident 4711"}, {"enable", "--reason", "fixed"}} {
		if o := h.run(t, append(args, "--tier", tier)...); o.code != 0 {
			t.Fatalf("%s: %s", args[0], o)
		}
	}
	p, _, err := admin.KV().Get(base+"audit/history", nil)
	if err != nil || p == nil {
		t.Fatalf("no audit/history: %v", err)
	}
	var n schema.Note
	if err := json.Unmarshal(p.Value, &n); err != nil {
		t.Fatal(err)
	}
	if n.Action != "enable" || n.Token == nil || n.Token.AccessorID != self.AccessorID || n.Token.Description != self.Description ||
		len(n.Earlier) != 1 || n.Earlier[0].Token == nil || n.Earlier[0].Token.AccessorID != self.AccessorID {
		t.Errorf("audit/history = %s; want enable then disable, both by token %s %q", p.Value, self.AccessorID, self.Description)
	}
	if strings.Contains(string(p.Value), secret) {
		t.Errorf("the token's secret is in the note: %s", p.Value)
	}
	// Not root under sudo (USER=mallory, SUDO_USER=alice, but tests run as root without
	// SUDO_UID): the account of the uid, not what the environment claims.
	if n.By == "alice" || n.By == "mallory" || n.UID == nil || *n.UID != os.Getuid() {
		t.Errorf("by %q, uid %v: the environment's claim was believed", n.By, n.UID)
	}
	if o := h.run(t, "status", "--tier", tier); !strings.Contains(o.stdout.String(), fmt.Sprintf("(token %.8s %q)", self.AccessorID, self.Description)) {
		t.Errorf("status does not name the token:\n%s", o)
	}
}
