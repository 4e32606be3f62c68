package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tierlock/tierlock/lock/schema"
)

// The roles acl-policy writes a Consul ACL policy for. Each gets what its commands touch and
// nothing more (see docs/security.md):
//
//   - host: `tierlock run` in its own tiers. It writes the running/, queue/ and converged/
//     keys and current of those tiers, reads the rest of them (max_concurrent, max_saved),
//     creates its queue sessions on its own node and reads its own agent (/v1/agent/self,
//     for the node its slot records). It cannot change max_concurrent, nor touch another
//     tier or another node's sessions.
//   - operator: status, set-max, disable, enable, release, repair, reap --instance-id or
//     --holder: write on the tiers (the reaper's memory read only). No sessions, no catalog.
//   - monitor: status and check: read the tiers.
//   - reaper: tierlock reap (all three ways) and the tierlock-reaper Lambda: write the
//     running/, queue/, converged/ keys and current of the tiers, read their settings, keep
//     its memory in PREFIX/_reaper/, and read every node of the catalog (--consul-catalog).
const (
	roleHost     = "host"
	roleOperator = "operator"
	roleMonitor  = "monitor"
	roleReaper   = "reaper"
)

// roleNames lists the roles, for checks and messages.
func roleNames() []string { return []string{roleHost, roleOperator, roleMonitor, roleReaper} }

// reaperDir is where the catalog reaper keeps its memory (monitor's _reaper/critical_since);
// a tier named _reaper/SERVICE would share its keys, so no policy is written for one.
const reaperDir = "_reaper/"

// errPolicy is the sentinel of every refusal of acl-policy: bad role, tier, node or prefix.
var errPolicy = errors.New("acl-policy")

// policyRequest is what the policy is written for.
type policyRequest struct {
	Role   string
	Prefix string
	Tiers  []string // none: every tier under the prefix (not for host)
	Node   string   // host only: the Consul node its sessions live on
}

// validate checks the request and returns it with duplicate tiers dropped.
func (r policyRequest) validate() (policyRequest, error) {
	if !slices.Contains(roleNames(), r.Role) {
		return r, fmt.Errorf("%w: --role %q: want %s", errPolicy, r.Role, strings.Join(roleNames(), ", "))
	}
	if err := schema.ValidatePrefix(r.Prefix); err != nil {
		return r, fmt.Errorf("%w: --prefix %q: %w", errPolicy, r.Prefix, err)
	}
	var tiers []string
	for _, t := range r.Tiers {
		if err := schema.ValidateTier(t); err != nil {
			return r, fmt.Errorf("%w: --tier %q: %w", errPolicy, t, err)
		}
		if strings.HasPrefix(t+"/", reaperDir) {
			return r, fmt.Errorf("%w: --tier %q: %s is the reaper's memory, not a tier", errPolicy, t, r.Prefix+"/"+reaperDir)
		}
		if !slices.Contains(tiers, t) {
			tiers = append(tiers, t)
		}
	}
	r.Tiers = tiers
	if r.Node != "" {
		if r.Role != roleHost {
			return r, fmt.Errorf("%w: --node %q: only --role host has a node (its sessions and its agent)", errPolicy, r.Node)
		}
		if err := schema.ValidateName("node", r.Node); err != nil {
			return r, fmt.Errorf("%w: --node %q: %w", errPolicy, r.Node, err)
		}
	}
	if r.Role == roleHost && len(r.Tiers) == 0 && r.Node == "" {
		return r, fmt.Errorf("%w: --role host needs its tiers (--tier), its node (--node) or both: "+
			"a host gets no right on every tier", errPolicy)
	}
	return r, nil
}

// commandLine is the acl-policy command line that prints this policy, for its first comment.
func (r policyRequest) commandLine() string {
	args := []string{"tierlock acl-policy --role " + r.Role}
	for _, t := range r.Tiers {
		args = append(args, "--tier "+t)
	}
	if r.Node != "" {
		args = append(args, "--node "+r.Node)
	}
	if r.Prefix != schema.DefaultPrefix {
		args = append(args, "--prefix "+r.Prefix)
	}
	return strings.Join(args, " ")
}

// policyName is a name for the policy in Consul, for the comment showing how to create it.
func (r policyRequest) policyName() string {
	parts := []string{"tierlock", r.Role}
	if r.Prefix != schema.DefaultPrefix {
		parts = append(parts, strings.ReplaceAll(r.Prefix, "/", "-"))
	}
	if len(r.Tiers) == 1 {
		parts = append(parts, strings.ReplaceAll(r.Tiers[0], "/", "-"))
	} else if len(r.Tiers) > 1 {
		parts = append(parts, fmt.Sprintf("%d-tiers", len(r.Tiers)))
	}
	if r.Node != "" {
		parts = append(parts, r.Node)
	}
	return strings.Join(parts, "-")
}

// policyWriter writes HCL rules. Every name in them has been validated (letters, digits,
// '.', '_', '-', and '/' between them), so %q quotes them exactly as HCL would.
type policyWriter struct {
	b strings.Builder
}

func (w *policyWriter) comment(lines ...string) {
	for _, l := range lines {
		if l == "" {
			w.b.WriteString("#\n")
			continue
		}
		w.b.WriteString("# " + l + "\n")
	}
}

func (w *policyWriter) rule(kind, name, policy string) {
	fmt.Fprintf(&w.b, "%s %q {\n  policy = %q\n}\n", kind, name, policy)
}

func (w *policyWriter) blank() { w.b.WriteString("\n") }

// aclPolicy writes the Consul ACL policy (HCL rules) of a role.
func aclPolicy(req policyRequest) (string, error) {
	r, err := req.validate()
	if err != nil {
		return "", err
	}
	w := &policyWriter{}
	w.comment("Printed by: "+r.commandLine(), "Create it with:",
		"  "+r.commandLine()+" |",
		"    consul acl policy create -name "+r.policyName()+" -rules @-")
	root := r.Prefix + "/"
	switch r.Role {
	case roleHost:
		w.comment("A host that runs `tierlock run` in these tiers and nothing else: it cannot change",
			"max_concurrent or max_saved, nor touch other tiers or other nodes' sessions.")
		for _, t := range r.Tiers {
			w.blank()
			w.slotRules(root + t + "/")
		}
		if r.Node != "" {
			w.blank()
			w.comment("Waiting for a slot puts the host in queue/ with a key bound to a Consul session, which",
				"tierlock creates on the node of the agent it talks to: its own.")
			w.rule("session", r.Node, "write")
			w.blank()
			w.comment("A slot records that node (/v1/agent/self), for `tierlock reap --consul-catalog`.")
			w.rule("agent", r.Node, "read")
		}
	case roleOperator:
		w.comment("An operator: status, set-max, disable, enable, release, repair, and reap --instance-id",
			"or --holder. No sessions, no catalog.")
		if len(r.Tiers) == 0 {
			w.blank()
			w.comment("Every tier under the prefix.")
			w.rule("key_prefix", root, "write")
			w.blank()
			w.comment("The catalog reaper's memory is the reaper's own.")
			w.rule("key_prefix", root+reaperDir, "read")
		}
		for _, t := range r.Tiers {
			w.blank()
			w.comment("Tier " + t + ".")
			w.rule("key_prefix", root+t+"/", "write")
		}
	case roleMonitor:
		w.comment("The monitoring: tierlock check (Nagios) and tierlock status. It changes nothing.")
		w.blank()
		if len(r.Tiers) == 0 {
			w.rule("key_prefix", root, "read")
		}
		for _, t := range r.Tiers {
			w.rule("key_prefix", root+t+"/", "read")
		}
	case roleReaper:
		w.comment("The termination hook (the tierlock-reaper Lambda) and tierlock reap: it frees the slots,",
			"queue entries and convergence records of dead hosts.")
		if len(r.Tiers) == 0 {
			w.blank()
			w.comment("Every tier under the prefix. Consul's rules cannot name running/ in every tier",
				"without listing the tiers, so this also lets the reaper write max_concurrent: list",
				"the tiers with --tier to narrow it (a tier left out then fails loudly).")
			w.rule("key_prefix", root, "write")
		} else {
			w.blank()
			w.comment("Finding a dead host's slots lists the prefix; only the tiers below can be changed.")
			w.rule("key_prefix", root, "read")
			for _, t := range r.Tiers {
				w.blank()
				w.slotRules(root + t + "/")
			}
			w.blank()
			w.comment("tierlock reap --consul-catalog remembers since when each node has been failing.")
			w.rule("key_prefix", root+reaperDir, "write")
		}
		w.blank()
		w.comment("tierlock reap --consul-catalog reads which nodes are in the catalog and whose",
			"serfHealth check is critical; without read on every node Consul hides nodes, and the",
			"reaper refuses to judge them gone. The Lambda does not need it.")
		w.rule("node_prefix", "", "read")
	}
	return w.b.String(), nil
}

// slotRules are the rules of a writer of slots in one tier (base ends in '/'): read the
// tier, write running/, queue/, converged/, current, rollout and line_head. Consul applies the
// longest matching prefix, and an exact key rule before any prefix.
func (w *policyWriter) slotRules(base string) {
	w.comment("Tier "+strings.TrimSuffix(base, "/")+": max_concurrent, max_saved and rollout_policy read only;",
		"running/, queue/, converged/, current, rollout and line_head read and written (a mover's",
		"take, release and failure move the rollout record in their own transaction, and a release",
		"hands its slot over from line_head; with this right a compromised host could also un-halt",
		"a revision).")
	w.rule("key_prefix", base, "read")
	for _, dir := range []string{"running/", "queue/", "converged/"} {
		w.rule("key_prefix", base+dir, "write")
	}
	w.rule("key", base+"current", "write")
	w.rule("key", base+"rollout", "write")
	w.rule("key", base+"line_head", "write")
}

func (a *App) aclPolicyCommand() *cli.Command {
	return &cli.Command{
		Name:      "acl-policy",
		Usage:     "print the Consul ACL policy (HCL) of a host, an operator, the monitoring or the reaper",
		UsageText: "tierlock acl-policy --role host|operator|monitor|reaper [--tier T ...] [--node N] [--prefix P] | consul acl policy create -name NAME -rules @-",
		Description: "host: run in the given tiers, sessions on its own node (--node); operator: the operator\n" +
			"commands; monitor: status and check; reaper: reap and the tierlock-reaper Lambda. Without\n" +
			"--tier, operator, monitor and reaper cover every tier under the prefix. See docs/security.md.",
		// No environment for --tier and --node: the policy is written for other hosts, and the
		// TIERLOCK_TIER of the machine it is written on must not slip into it.
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "role", Usage: "host, operator, monitor or reaper (required)"},
			&cli.StringSliceFlag{Name: "tier", Usage: "a tier the role may work in, ENVIRONMENT/SERVICE (repeat for more)"},
			&cli.StringFlag{Name: "node", Usage: "with --role host: the Consul node of the host's agent"},
			prefixFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usage("%w: unexpected argument %q", errPolicy, c.Args().First())
			}
			if !c.IsSet("role") {
				return usage("%w: --role is required: %s", errPolicy, strings.Join(roleNames(), ", "))
			}
			hcl, err := aclPolicy(policyRequest{Role: c.String("role"), Prefix: c.String("prefix"), Tiers: c.StringSlice("tier"), Node: c.String("node")})
			if err != nil {
				return refuse(err)
			}
			_, err = io.WriteString(a.Stdout, hcl)
			return err
		},
	}
}
