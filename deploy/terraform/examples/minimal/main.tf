# The smallest complete use of the module: the controller on Fargate in an existing VPC, its
# desired state in a GitHub repository, the activator behind an existing ALB, its Terraform
# runs in a new CodeBuild project. README, "Deploy on AWS", walks through it.
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

# pushed beforehand (README): aws ecr create-repository --repository-name infra-controller
data "aws_ecr_repository" "controller" {
  name = "infra-controller"
}

# created beforehand (README): aws secretsmanager create-secret --name infra-controller/...
data "aws_secretsmanager_secret" "api_token" {
  name = "infra-controller/api-token"
}

data "aws_secretsmanager_secret" "webhook_secret" {
  name = "infra-controller/webhook-secret"
}

data "aws_secretsmanager_secret" "git_token" {
  name = "infra-controller/git-token"
}

data "aws_lb" "apps" {
  name = var.alb_name
}

resource "aws_ecs_cluster" "controller" {
  name = "infra-controller"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

module "infra_controller" {
  source = "../.."

  image                = "${data.aws_ecr_repository.controller.repository_url}:${var.image_tag}"
  image_repository_arn = data.aws_ecr_repository.controller.arn
  cluster_arn          = aws_ecs_cluster.controller.arn
  vpc_id               = var.vpc_id
  subnet_ids           = var.private_subnet_ids

  desired_state        = var.desired_state
  api_token_secret_arn = data.aws_secretsmanager_secret.api_token.arn
  webhook_secret_arn   = data.aws_secretsmanager_secret.webhook_secret.arn
  git_token_secret_arn = data.aws_secretsmanager_secret.git_token.arn

  # what it manages: the names its policy is scoped to
  managed_services       = var.managed_services
  managed_load_balancers = [var.alb_name]
  alb_security_group_ids = data.aws_lb.apps.security_groups
  prometheus_cidr_blocks = var.prometheus_cidr_blocks

  webhook = {
    listener_arn = var.https_listener_arn
    host         = var.webhook_host
  }

  codebuild_project = {
    name            = "infra-controller-terraform"
    source_location = var.infra_repository_url
    policy_arns     = var.terraform_policy_arns
  }

  dashboard_load_balancers = [data.aws_lb.apps.arn_suffix]
}

output "service" {
  value = module.infra_controller.service_name
}

output "activator_target_group_arn" {
  value = module.infra_controller.activator_target_group_arn
}

output "dashboard" {
  value = module.infra_controller.dashboard_name
}
