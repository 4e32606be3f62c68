variable "name" {
  description = "Name of the function, and prefix of everything else the module creates."
  type        = string
  default     = "tierlock-reaper"
}

variable "zip_file" {
  description = "Path of the function's zip, from `make lambda` (dist/tierlock-reaper-arm64.zip or -amd64.zip)."
  type        = string
}

variable "architecture" {
  description = "arm64 or x86_64; must match the zip."
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "consul_http_addr" {
  description = "Consul's HTTP API as the function reaches it, e.g. https://consul.internal:8501 (CONSUL_HTTP_ADDR)."
  type        = string
}

variable "consul_token_parameter" {
  description = "Name of the SSM SecureString parameter holding the Consul ACL token (it needs key:write on the prefix). Empty: no token."
  type        = string
  default     = ""
}

variable "consul_token_kms_key_arn" {
  description = "ARN of the customer-managed KMS key encrypting that parameter. Empty: the AWS-managed aws/ssm key, which needs no grant."
  type        = string
  default     = ""
}

variable "tierlock_prefix" {
  description = "Consul KV prefix of all tiers (TIERLOCK_PREFIX)."
  type        = string
  default     = "chef"
}

variable "extra_environment" {
  description = "More environment variables, e.g. CONSUL_TLS_SERVER_NAME. Never a token: use consul_token_parameter."
  type        = map(string)
  default     = {}
}

variable "subnet_ids" {
  description = "Subnets to run the function in, when Consul is only reachable inside a VPC. Empty: no VPC."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the function in the VPC; they must allow it to reach Consul (and STS, SSM, Auto Scaling: NAT or VPC endpoints)."
  type        = list(string)
  default     = []
}

variable "autoscaling_group_names" {
  description = "More Auto Scaling groups whose lifecycle actions the function may complete, besides lifecycle_hook_autoscaling_groups (say, groups hooked by hand). None named at all: it may complete none."
  type        = list(string)
  default     = []
}

variable "lifecycle_hook_autoscaling_groups" {
  description = "Auto Scaling groups to give a termination lifecycle hook, so that slots are freed before the instance goes away."
  type        = list(string)
  default     = []
}

variable "lifecycle_hook_name" {
  description = "Name of the termination lifecycle hooks; the function completes these (and extra_lifecycle_hook_names), never another hook."
  type        = string
  default     = "tierlock-free-slots"
  validation {
    condition     = can(regex("^[A-Za-z0-9_/-]{1,255}$", var.lifecycle_hook_name))
    error_message = "lifecycle_hook_name must be 1 to 255 of A-Z a-z 0-9 - _ /, as Auto Scaling requires."
  }
}

variable "extra_lifecycle_hook_names" {
  description = "More termination lifecycle hooks of tierlock's (made by hand, say) whose actions the function completes. Never another team's hook: the function would cut its work short."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for n in var.extra_lifecycle_hook_names : can(regex("^[A-Za-z0-9_/-]{1,255}$", n))])
    error_message = "Each of extra_lifecycle_hook_names must be 1 to 255 of A-Z a-z 0-9 - _ /."
  }
}

variable "lifecycle_heartbeat_timeout" {
  description = "Seconds Auto Scaling waits for the function before going on (result CONTINUE)."
  type        = number
  default     = 300
}

variable "alarm_actions" {
  description = "ARNs (SNS topics) notified when the function fails or the dead-letter queue holds events."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Days to keep the function's logs."
  type        = number
  default     = 30
}

variable "timeout" {
  description = "Seconds one invocation may take."
  type        = number
  default     = 60
}

variable "tags" {
  description = "Tags for everything the module creates."
  type        = map(string)
  default     = {}
}
