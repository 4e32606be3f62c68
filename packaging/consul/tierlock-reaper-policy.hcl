# Consul ACL policy for the token of the termination hook (the tierlock-reaper Lambda) and of
# `tierlock reap`, which free the slots and queue entries of dead hosts in every tier under the
# prefix ("chef/", the default; change it with yours). Create it with:
#   consul acl policy create -name tierlock-reaper -rules @tierlock-reaper-policy.hcl
#   consul acl token create -description tierlock-reaper -policy-name tierlock-reaper
key_prefix "chef/" {
  policy = "write"
}

# Only for `tierlock reap --consul-catalog`: it reads which nodes are in the catalog and whose
# serfHealth check is critical. Without read access to every node, Consul hides the nodes the
# token may not see, and the reaper refuses to judge them gone.
node_prefix "" {
  policy = "read"
}
