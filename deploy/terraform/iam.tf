data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  partition = data.aws_partition.current.partition
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  regions   = length(var.managed_regions) > 0 ? var.managed_regions : [local.region]

  codebuild_project_names = concat(
    var.codebuild_projects,
    var.codebuild_project == null ? [] : [var.codebuild_project.name],
  )

  # What each scope of controller_actions.tf grants its actions on. A scope without resources
  # (no CodeBuild project, no SNS topic...) grants nothing.
  action_scopes = {
    # the read operations that support no resource-level permission
    any = ["*"]
    # PutMetricData supports none either: the condition below keeps it to one namespace
    metric_namespace = ["*"]
    ecs_services = distinct(flatten([
      for region in local.regions : [
        for s in var.managed_services :
        "arn:${local.partition}:ecs:${region}:${local.account}:service/${s.cluster}/${s.service}"
      ]
    ]))
    load_balancer_routes = flatten([
      for region in local.regions : [
        for lb in var.managed_load_balancers : [
          "arn:${local.partition}:elasticloadbalancing:${region}:${local.account}:listener/app/${lb}/*",
          "arn:${local.partition}:elasticloadbalancing:${region}:${local.account}:listener-rule/app/${lb}/*",
        ]
      ]
    ])
    activator_target_group = aws_lb_target_group.activator[*].arn
    codebuild_projects = flatten([
      for region in local.regions : [
        for project in local.codebuild_project_names :
        "arn:${local.partition}:codebuild:${region}:${local.account}:project/${project}"
      ]
    ])
    state_table         = [aws_dynamodb_table.state.arn]
    notification_topics = var.notification_topic_arns
  }
  action_conditions = {
    metric_namespace = {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.cloudwatch_namespace]
    }
  }
  # scope => the actions of controller_actions.tf granted on it
  scope_actions = {
    for scope in keys(local.action_scopes) : scope => sort([
      for action, granted_on in local.controller_actions : action if granted_on == scope
    ])
  }
  task_statements = {
    for scope, resources in local.action_scopes : scope => {
      actions   = local.scope_actions[scope]
      resources = resources
    } if length(resources) > 0 && length(local.scope_actions[scope]) > 0
  }
}

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

# --- the task role: what the controller itself may do ------------------------------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "task" {
  dynamic "statement" {
    for_each = local.task_statements
    content {
      sid       = replace(title(replace(statement.key, "_", " ")), " ", "")
      actions   = statement.value.actions
      resources = statement.value.resources
      dynamic "condition" {
        for_each = contains(keys(local.action_conditions), statement.key) ? [local.action_conditions[statement.key]] : []
        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-controller"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- the execution role: what ECS does to start the task ---------------------------------------

locals {
  # CONTROLLER_* secrets and the extra ones: NAME => ARN (a Secrets Manager ARN may end with a
  # JSON key, ":key::", which the policy leaves out)
  secrets = merge(
    var.api_token_secret_arn == null ? {} : { CONTROLLER_API_TOKEN = var.api_token_secret_arn },
    var.webhook_secret_arn == null ? {} : { CONTROLLER_WEBHOOK_SECRET = var.webhook_secret_arn },
    var.git_token_secret_arn == null ? {} : { CONTROLLER_GIT_TOKEN = var.git_token_secret_arn },
    var.extra_secrets,
  )
  secret_arns = distinct([
    for arn in values(local.secrets) : join(":", slice(split(":", arn), 0, 7))
    if length(regexall("^arn:[^:]+:secretsmanager:", arn)) > 0
  ])
  parameter_arns = distinct([
    for arn in values(local.secrets) : arn if length(regexall("^arn:[^:]+:ssm:", arn)) > 0
  ])
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.controller.arn}:*"]
  }
  dynamic "statement" {
    for_each = var.image_repository_arn == null ? [] : [var.image_repository_arn]
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    # ECR's login supports no resource-level permission
    for_each = var.image_repository_arn == null ? [] : ["*"]
    content {
      sid       = "LogInToEcr"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    for_each = length(local.secret_arns) > 0 ? [local.secret_arns] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = statement.value
    }
  }
  dynamic "statement" {
    for_each = length(local.parameter_arns) > 0 ? [local.parameter_arns] : []
    content {
      sid       = "ReadParameters"
      actions   = ["ssm:GetParameters"]
      resources = statement.value
    }
  }
  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) > 0 ? [var.secrets_kms_key_arns] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = statement.value
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com", "ssm.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}
