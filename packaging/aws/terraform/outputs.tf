output "function_arn" {
  description = "ARN of the function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's role (to allow in Consul's AWS auth method, or in a KMS key policy)."
  value       = aws_iam_role.this.arn
}

output "dead_letter_queue_url" {
  description = "The queue of events the function gave up on."
  value       = aws_sqs_queue.dead_letters.id
}

output "rule_arns" {
  description = "The three EventBridge rules."
  value = [
    aws_cloudwatch_event_rule.ec2_state_change.arn, aws_cloudwatch_event_rule.autoscaling_termination.arn,
    aws_cloudwatch_event_rule.lifecycle_action.arn,
  ]
}
