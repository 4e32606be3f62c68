# Consul ACL policy for the token of the monitoring (`tierlock check` under Nagios, `tierlock
# status` for a dashboard): read the tiers under the prefix ("chef/", the default; change it
# with yours), change nothing. Create it with:
#   consul acl policy create -name tierlock-check -rules @tierlock-check-policy.hcl
#   consul acl token create -description "tierlock check" -policy-name tierlock-check
key_prefix "chef/" {
  policy = "read"
}
