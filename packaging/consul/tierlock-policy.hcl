# Consul ACL policy for the token of every host that runs `tierlock run` (the token goes in a
# file named by CONSUL_HTTP_TOKEN_FILE in /etc/default/tierlock). Create it with:
#   consul acl policy create -name tierlock -rules @tierlock-policy.hcl
#   consul acl token create -description "tierlock on $(hostname)" -policy-name tierlock
#
# A host reads and writes the keys of the tiers under the prefix (max_concurrent, current,
# running/<holder>); "chef/" is the default --prefix, change it with yours. Nothing else:
# tierlock never needs node, service or agent rights.
key_prefix "chef/" {
  policy = "write"
}
