# tierlock-reaper: frees the tierlock slots of EC2 instances that terminate.
#
# Three EventBridge rules (EC2 state changes to shutting-down/terminated; Auto Scaling
# terminations; termination lifecycle actions of the hooks named, and only those), all of this
# account only, invoke the function, each through a
# permission scoped to its own rule. Events the function fails on are retried by Lambda, then
# kept in the dead-letter queue; an alarm fires on the function's errors and on dead letters.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  arn_prefix = "arn:${data.aws_partition.current.partition}"
  region     = data.aws_region.current.name
  account    = data.aws_caller_identity.current.account_id
  in_vpc     = length(var.subnet_ids) > 0

  # Lifecycle actions may only be completed for the groups named: those the module hooks and
  # those listed. None named: the role may complete none.
  autoscaling_group_names = distinct(concat(var.lifecycle_hook_autoscaling_groups, var.autoscaling_group_names))
  autoscaling_group_arns = [
    for g in local.autoscaling_group_names :
    "${local.arn_prefix}:autoscaling:${local.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${g}"
  ]
  # The hooks the function completes (TIERLOCK_LIFECYCLE_HOOK_NAMES) and the only ones whose
  # events reach it: other teams' hooks on the same groups are theirs to complete.
  lifecycle_hook_names = distinct(concat([var.lifecycle_hook_name], var.extra_lifecycle_hook_names))
  token_parameter_arn  = "${local.arn_prefix}:ssm:${local.region}:${local.account}:parameter/${trimprefix(var.consul_token_parameter, "/")}"
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_sqs_queue" "dead_letters" {
  name                      = "${var.name}-dead-letters"
  message_retention_seconds = 1209600 # 14 days, the most SQS keeps
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

# EventBridge puts the events it could not deliver in the same queue.
data "aws_iam_policy_document" "dead_letters" {
  statement {
    sid       = "EventBridgeUndelivered"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letters.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values = [
        aws_cloudwatch_event_rule.ec2_state_change.arn, aws_cloudwatch_event_rule.autoscaling_termination.arn,
        aws_cloudwatch_event_rule.lifecycle_action.arn,
      ]
    }
  }
}

resource "aws_sqs_queue_policy" "dead_letters" {
  queue_url = aws_sqs_queue.dead_letters.id
  policy    = data.aws_iam_policy_document.dead_letters.json
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

# Least privilege: its own log group, its own dead-letter queue, completing lifecycle actions
# of the given groups, reading the one token parameter, and (in a VPC only) its network
# interfaces. sts:GetCallerIdentity needs no permission.
data "aws_iam_policy_document" "this" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letters.arn]
  }
  # IAM has no condition key for the hook's name: the hooks are narrowed by the rule's
  # pattern and by the function itself (TIERLOCK_LIFECYCLE_HOOK_NAMES).
  dynamic "statement" {
    for_each = length(local.autoscaling_group_names) > 0 ? [1] : []
    content {
      sid       = "CompleteLifecycleActions"
      actions   = ["autoscaling:CompleteLifecycleAction"]
      resources = local.autoscaling_group_arns
    }
  }
  dynamic "statement" {
    for_each = var.consul_token_parameter != "" ? [1] : []
    content {
      sid       = "ConsulToken"
      actions   = ["ssm:GetParameter"]
      resources = [local.token_parameter_arn]
    }
  }
  dynamic "statement" {
    for_each = var.consul_token_kms_key_arn != "" ? [1] : []
    content {
      sid       = "ConsulTokenKey"
      actions   = ["kms:Decrypt"]
      resources = [var.consul_token_kms_key_arn]
    }
  }
  dynamic "statement" {
    for_each = local.in_vpc ? [1] : []
    content {
      # Lambda's own network interfaces in the VPC; these actions take no narrower resource.
      sid = "VpcNetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = var.name
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_lambda_function" "this" {
  function_name    = var.name
  role             = aws_iam_role.this.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = var.zip_file
  source_code_hash = filebase64sha256(var.zip_file)
  timeout          = var.timeout
  memory_size      = 128

  environment {
    variables = merge(var.extra_environment, {
      CONSUL_HTTP_ADDR                = var.consul_http_addr
      TIERLOCK_PREFIX                 = var.tierlock_prefix
      TIERLOCK_CONSUL_TOKEN_PARAMETER = var.consul_token_parameter
      TIERLOCK_LIFECYCLE_HOOK_NAMES   = join(",", local.lifecycle_hook_names)
    })
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dead_letters.arn
  }

  logging_config {
    log_format = "Text" # the function writes JSON lines itself
    log_group  = aws_cloudwatch_log_group.this.name
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.this]
}

# A failed event is tried twice more, then goes to the dead-letter queue.
resource "aws_lambda_function_event_invoke_config" "this" {
  function_name                = aws_lambda_function.this.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 21600
}

# Every rule matches this account's events only (a bus may receive other accounts' events).
resource "aws_cloudwatch_event_rule" "ec2_state_change" {
  name        = "${var.name}-ec2-state-change"
  description = "EC2 instances shutting down or terminated: free their tierlock slots"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Instance State-change Notification"]
    account       = [local.account]
    detail = {
      state = ["shutting-down", "terminated"]
    }
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_rule" "autoscaling_termination" {
  name        = "${var.name}-autoscaling-termination"
  description = "Auto Scaling terminations: free tierlock slots"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance Terminate Successful"]
    account       = [local.account]
  })
  tags = var.tags
}

# Only our hooks' lifecycle actions: the function completes them once the slots are free.
resource "aws_cloudwatch_event_rule" "lifecycle_action" {
  name        = "${var.name}-lifecycle-action"
  description = "Termination lifecycle actions of tierlock's hooks: free tierlock slots, then CONTINUE"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance-terminate Lifecycle Action"]
    account       = [local.account]
    detail = {
      LifecycleHookName = local.lifecycle_hook_names
    }
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_target" "ec2_state_change" {
  rule = aws_cloudwatch_event_rule.ec2_state_change.name
  arn  = aws_lambda_function.this.arn
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
  dead_letter_config {
    arn = aws_sqs_queue.dead_letters.arn
  }
}

resource "aws_cloudwatch_event_target" "autoscaling_termination" {
  rule = aws_cloudwatch_event_rule.autoscaling_termination.name
  arn  = aws_lambda_function.this.arn
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
  dead_letter_config {
    arn = aws_sqs_queue.dead_letters.arn
  }
}

resource "aws_cloudwatch_event_target" "lifecycle_action" {
  rule = aws_cloudwatch_event_rule.lifecycle_action.name
  arn  = aws_lambda_function.this.arn
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
  dead_letter_config {
    arn = aws_sqs_queue.dead_letters.arn
  }
}

resource "aws_lambda_permission" "ec2_state_change" {
  statement_id  = "AllowEC2StateChangeRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.ec2_state_change.arn
}

resource "aws_lambda_permission" "autoscaling_termination" {
  statement_id  = "AllowAutoScalingTerminationRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.autoscaling_termination.arn
}

resource "aws_lambda_permission" "lifecycle_action" {
  statement_id  = "AllowLifecycleActionRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.lifecycle_action.arn
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${var.name}-errors"
  alarm_description   = "tierlock-reaper failed on an event: slots of a dead instance may still be held (see its logs and the dead-letter queue)"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name}-dead-letters"
  alarm_description   = "Termination events tierlock-reaper gave up on: free those instances' slots with `tierlock reap --instance-id`"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letters.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  tags                = var.tags
}

resource "aws_autoscaling_lifecycle_hook" "terminate" {
  for_each               = toset(var.lifecycle_hook_autoscaling_groups)
  name                   = var.lifecycle_hook_name
  autoscaling_group_name = each.value
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.lifecycle_heartbeat_timeout
  default_result         = "CONTINUE"
}
