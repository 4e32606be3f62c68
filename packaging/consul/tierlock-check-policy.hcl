# Printed by: tierlock acl-policy --role monitor
# Create it with:
#   tierlock acl-policy --role monitor |
#     consul acl policy create -name tierlock-monitor -rules @-
# The monitoring: tierlock check (Nagios) and tierlock status. It changes nothing.

key_prefix "chef/" {
  policy = "read"
}
