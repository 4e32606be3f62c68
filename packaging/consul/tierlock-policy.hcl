# Printed by: tierlock acl-policy --role host --tier logstash/es-indexer --node web-1
# Create it with:
#   tierlock acl-policy --role host --tier logstash/es-indexer --node web-1 |
#     consul acl policy create -name tierlock-host-logstash-es-indexer-web-1 -rules @-
# A host that runs `tierlock run` in these tiers and nothing else: it cannot change
# max_concurrent or max_saved, nor touch other tiers or other nodes' sessions.

# Tier chef/logstash/es-indexer: max_concurrent, max_saved and rollout_policy read only;
# running/, queue/, converged/, current, rollout and line_head read and written (a mover's
# take, release and failure move the rollout record in their own transaction, and a release
# hands its slot over from line_head; with this right a compromised host could also un-halt
# a revision).
key_prefix "chef/logstash/es-indexer/" {
  policy = "read"
}
key_prefix "chef/logstash/es-indexer/running/" {
  policy = "write"
}
key_prefix "chef/logstash/es-indexer/queue/" {
  policy = "write"
}
key_prefix "chef/logstash/es-indexer/converged/" {
  policy = "write"
}
key "chef/logstash/es-indexer/current" {
  policy = "write"
}
key "chef/logstash/es-indexer/rollout" {
  policy = "write"
}
key "chef/logstash/es-indexer/line_head" {
  policy = "write"
}

# Waiting for a slot puts the host in queue/ with a key bound to a Consul session, which
# tierlock creates on the node of the agent it talks to: its own.
session "web-1" {
  policy = "write"
}

# A slot records that node (/v1/agent/self), for `tierlock reap --consul-catalog`.
agent "web-1" {
  policy = "read"
}
