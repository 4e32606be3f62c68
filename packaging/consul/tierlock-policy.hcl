# Consul ACL policy for the token of every host that runs `tierlock run` (the token goes in a
# file named by CONSUL_HTTP_TOKEN_FILE in /etc/default/tierlock). Create it with:
#   consul acl policy create -name tierlock -rules @tierlock-policy.hcl
#   consul acl token create -description "tierlock on $(hostname)" -policy-name tierlock
# It is also all that the operator commands (status, set-max, disable, enable, release,
# repair, reap --instance-id/--holder) need.
#
# A host reads and writes the keys of the tiers under the prefix (max_concurrent, current,
# running/<holder>, queue/<holder>); "chef/" is the default --prefix, change it with yours.
key_prefix "chef/" {
  policy = "write"
}

# Waiting for a slot puts the host in the tier's queue/ with an entry bound to a Consul
# session, which tierlock creates on the node of the agent it talks to (its own, normally).
# With one token per host, `session "NODE-NAME"` instead narrows this to that node.
session_prefix "" {
  policy = "write"
}

# A slot records the Consul node of the agent the run talks to (/v1/agent/self), so that
# `tierlock reap --consul-catalog` can tell when the host is gone. Without this the run goes
# on, with a warning, and its slot is never judged by the catalog reaper. With one token per
# host, `agent "NODE-NAME"` narrows it to that node.
agent_prefix "" {
  policy = "read"
}
