# Printed by: tierlock acl-policy --role reaper
# Create it with:
#   tierlock acl-policy --role reaper |
#     consul acl policy create -name tierlock-reaper -rules @-
# The termination hook (the tierlock-reaper Lambda) and tierlock reap: it frees the slots,
# queue entries and convergence records of dead hosts.

# Every tier under the prefix. Consul's rules cannot name running/ in every tier
# without listing the tiers, so this also lets the reaper write max_concurrent: list
# the tiers with --tier to narrow it (a tier left out then fails loudly).
key_prefix "chef/" {
  policy = "write"
}

# tierlock reap --consul-catalog reads which nodes are in the catalog and whose
# serfHealth check is critical; without read on every node Consul hides nodes, and the
# reaper refuses to judge them gone. The Lambda does not need it.
node_prefix "" {
  policy = "read"
}
