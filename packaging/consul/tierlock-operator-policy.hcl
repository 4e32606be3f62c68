# Printed by: tierlock acl-policy --role operator
# Create it with:
#   tierlock acl-policy --role operator |
#     consul acl policy create -name tierlock-operator -rules @-
# An operator: status, set-max, disable, enable, release, repair, and reap --instance-id
# or --holder. No sessions, no catalog.

# Every tier under the prefix.
key_prefix "chef/" {
  policy = "write"
}

# The catalog reaper's memory is the reaper's own.
key_prefix "chef/_reaper/" {
  policy = "read"
}
