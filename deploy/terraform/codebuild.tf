# An optional CodeBuild project that runs the environments' Terraform (runner: codebuild): the
# controller starts one build per run with TF_ACTION=apply|destroy and TF_ENVIRONMENT=NAME, and
# deploy/buildspec.yml plans, then applies (or destroys) in ENVIRONMENTS_DIR/NAME.
locals {
  codebuild = var.codebuild_project == null ? {} : { terraform = var.codebuild_project }
}

resource "aws_cloudwatch_log_group" "codebuild" {
  for_each          = local.codebuild
  name              = "/aws/codebuild/${each.value.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "assume_codebuild" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codebuild.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "codebuild" {
  for_each           = local.codebuild
  name               = "${var.name}-terraform-runs"
  assume_role_policy = data.aws_iam_policy_document.assume_codebuild.json
  tags               = var.tags
}

data "aws_iam_policy_document" "codebuild" {
  for_each = local.codebuild
  statement {
    sid       = "WriteBuildLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.codebuild[each.key].arn}:*"]
  }
  dynamic "statement" {
    # a build in a VPC creates and removes its network interface (these support no resource)
    for_each = length(each.value.vpc_subnet_ids) > 0 ? ["*"] : []
    content {
      sid = "BuildInVpc"
      actions = [
        "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeDhcpOptions",
        "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
      ]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "codebuild" {
  for_each = local.codebuild
  name     = "${var.name}-terraform-runs"
  role     = aws_iam_role.codebuild[each.key].id
  policy   = data.aws_iam_policy_document.codebuild[each.key].json
}

# What Terraform needs to create and destroy the environments (and to reach its state backend):
# the operator's policies, attached as given.
resource "aws_iam_role_policy_attachment" "codebuild" {
  for_each   = { for i, arn in try(var.codebuild_project.policy_arns, []) : tostring(i) => arn }
  role       = aws_iam_role.codebuild["terraform"].name
  policy_arn = each.value
}

resource "aws_codebuild_project" "terraform" {
  for_each       = local.codebuild
  name           = each.value.name
  description    = "Terraform apply and destroy runs started by infra-controller"
  service_role   = aws_iam_role.codebuild[each.key].arn
  build_timeout  = each.value.timeout_minutes
  encryption_key = var.kms_key_arn
  source_version = each.value.source_version

  source {
    type      = each.value.source_type
    location  = each.value.source_location
    buildspec = file("${path.module}/../buildspec.yml")
  }
  artifacts {
    type = "NO_ARTIFACTS"
  }
  environment {
    type         = var.cpu_architecture == "ARM64" ? "ARM_CONTAINER" : "LINUX_CONTAINER"
    image        = var.cpu_architecture == "ARM64" ? "aws/codebuild/amazonlinux-aarch64-standard:3.0" : "aws/codebuild/amazonlinux-x86_64-standard:5.0"
    compute_type = each.value.compute_type
    environment_variable {
      name  = "ENVIRONMENTS_DIR"
      value = each.value.environments_dir
    }
    environment_variable {
      name  = "TERRAFORM_VERSION"
      value = each.value.terraform_version
    }
  }
  logs_config {
    cloudwatch_logs {
      group_name = aws_cloudwatch_log_group.codebuild[each.key].name
    }
  }
  dynamic "vpc_config" {
    for_each = length(each.value.vpc_subnet_ids) > 0 ? [each.value] : []
    content {
      vpc_id             = var.vpc_id
      subnets            = vpc_config.value.vpc_subnet_ids
      security_group_ids = vpc_config.value.vpc_security_groups
    }
  }
  tags = var.tags
}
