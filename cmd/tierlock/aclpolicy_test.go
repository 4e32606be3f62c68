package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// rule is one block of a policy: `kind "name" { policy = "p" }`.
var rulePattern = regexp.MustCompile(`(?m)^(key|key_prefix|session|session_prefix|agent|agent_prefix|node|node_prefix) "([^"]*)" \{\n  policy = "(read|write|deny)"\n\}$`)

// rules lists a policy's rules as "kind name policy", in order.
func rules(hcl string) []string {
	var out []string
	for _, m := range rulePattern.FindAllStringSubmatch(hcl, -1) {
		out = append(out, m[1]+" "+m[2]+" "+m[3])
	}
	return out
}

// Each role gets exactly the rules its commands need; the Consul-side proof that these are
// enough, and refuse the rest, is reliability's TestACLRoles.
func TestACLPolicyRules(t *testing.T) {
	slots := func(base string) []string {
		return []string{"key_prefix " + base + " read", "key_prefix " + base + "running/ write", "key_prefix " + base + "queue/ write",
			"key_prefix " + base + "converged/ write", "key " + base + "current write", "key " + base + "rollout write", "key " + base + "line_head write"}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name string
		req  policyRequest
		want []string
	}{
		{"host, one tier, its node", policyRequest{Role: "host", Prefix: "chef", Tiers: []string{"prod/web"}, Node: "web-1"},
			cat(slots("chef/prod/web/"), []string{"session web-1 write", "agent web-1 read"})},
		{"host, two tiers, duplicates dropped", policyRequest{Role: "host", Prefix: "chef", Tiers: []string{"prod/web", "prod/db", "prod/web"}, Node: "db-1"},
			cat(slots("chef/prod/web/"), slots("chef/prod/db/"), []string{"session db-1 write", "agent db-1 read"})},
		{"host, per tier", policyRequest{Role: "host", Prefix: "chef", Tiers: []string{"prod/web"}}, slots("chef/prod/web/")},
		{"host, per node", policyRequest{Role: "host", Prefix: "chef", Node: "web-1"}, []string{"session web-1 write", "agent web-1 read"}},
		{"host, own prefix", policyRequest{Role: "host", Prefix: "ops/cm", Tiers: []string{"prod/web"}, Node: "w"},
			cat(slots("ops/cm/prod/web/"), []string{"session w write", "agent w read"})},
		{"operator, every tier", policyRequest{Role: "operator", Prefix: "chef"}, []string{"key_prefix chef/ write", "key_prefix chef/_reaper/ read"}},
		{"operator, some tiers", policyRequest{Role: "operator", Prefix: "chef", Tiers: []string{"prod/web", "stage/web"}},
			[]string{"key_prefix chef/prod/web/ write", "key_prefix chef/stage/web/ write"}},
		{"monitor, every tier", policyRequest{Role: "monitor", Prefix: "chef"}, []string{"key_prefix chef/ read"}},
		{"monitor, one tier", policyRequest{Role: "monitor", Prefix: "chef", Tiers: []string{"prod/web"}}, []string{"key_prefix chef/prod/web/ read"}},
		{"reaper, every tier", policyRequest{Role: "reaper", Prefix: "chef"}, []string{"key_prefix chef/ write", "node_prefix  read"}},
		{"reaper, some tiers", policyRequest{Role: "reaper", Prefix: "chef", Tiers: []string{"prod/web"}},
			cat([]string{"key_prefix chef/ read"}, slots("chef/prod/web/"), []string{"key_prefix chef/_reaper/ write", "node_prefix  read"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcl, err := aclPolicy(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := rules(hcl); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("rules\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			// Nothing but comments, blank lines and those rules: no rule the pattern missed.
			rest := rulePattern.ReplaceAllString(hcl, "")
			for _, line := range strings.Split(rest, "\n") {
				if line != "" && !strings.HasPrefix(line, "#") {
					t.Errorf("unexpected line %q in\n%s", line, hcl)
				}
			}
			if !strings.HasPrefix(hcl, "# Printed by: tierlock acl-policy --role "+tt.req.Role) {
				t.Errorf("the policy does not say how it was made:\n%s", hcl)
			}
		})
	}
}

// Bad input: exit 78, an error naming the bad value, and nothing on stdout (a pipe into
// `consul acl policy create` then creates nothing).
func TestACLPolicyRefusals(t *testing.T) {
	tests := []struct {
		args []string
		says string
	}{
		{[]string{}, "--role is required"},
		{[]string{"--role", "admin"}, `--role "admin"`},
		{[]string{"--role", "Host"}, `--role "Host"`},
		{[]string{"--role", "host"}, "needs its tiers"},
		{[]string{"--role", "host", "--tier", "prod"}, `--tier "prod"`},
		{[]string{"--role", "host", "--tier", "prod/web/x"}, `--tier "prod/web/x"`},
		{[]string{"--role", "host", "--tier", "prod/we\"b"}, `prod/we\"b`},
		{[]string{"--role", "monitor", "--tier", "prod/w\x1b]0;pwned\x07eb"}, `--tier "prod/w\x1b]0;pwned\aeb"`},
		{[]string{"--role", "reaper", "--tier", "_reaper/x"}, `--tier "_reaper/x"`},
		{[]string{"--role", "host", "--tier", "prod/web", "--node", `web-1" { policy = "write" } #`}, `--node "web-1\" {`},
		{[]string{"--role", "host", "--node", ""}, "needs its tiers"},
		{[]string{"--role", "operator", "--node", "web-1"}, `--node "web-1": only --role host`},
		{[]string{"--role", "monitor", "--prefix", "chef/../x"}, `--prefix "chef/../x"`},
		{[]string{"--role", "monitor", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			a := &App{Stdout: &out, Stderr: &errb}
			code := a.Run(context.Background(), append([]string{"tierlock", "acl-policy"}, tt.args...))
			if code != exitConfig || !strings.Contains(errb.String(), tt.says) || out.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want 78 and %q", code, out.String(), errb.String(), tt.says)
			}
		})
	}
}

// Neither the environment's tier nor its node slip into a policy written for other hosts;
// the prefix does (TIERLOCK_PREFIX), as for every command.
func TestACLPolicyEnvironment(t *testing.T) {
	t.Setenv("TIERLOCK_TIER", "prod/admin-box")
	t.Setenv("TIERLOCK_PREFIX", "ops")
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb}
	if code := a.Run(context.Background(), []string{"tierlock", "acl-policy", "--role", "monitor"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := rules(out.String()); len(got) != 1 || got[0] != "key_prefix ops/ read" {
		t.Errorf("rules %q, want the whole ops/ prefix read", got)
	}
}
