output "service_name" {
  description = "The controller's ECS service."
  value       = aws_ecs_service.controller.name
}

output "task_role_arn" {
  description = "The controller's task role (its least-privilege policy is built from controller_actions.tf)."
  value       = aws_iam_role.task.arn
}

output "task_policy_json" {
  description = "The task role's policy, as granted."
  value       = data.aws_iam_policy_document.task.json
}

output "security_group_id" {
  description = "The controller task's security group."
  value       = aws_security_group.controller.id
}

output "state_table_name" {
  description = "The DynamoDB state table."
  value       = aws_dynamodb_table.state.name
}

output "log_group_name" {
  description = "The controller's log group."
  value       = aws_cloudwatch_log_group.controller.name
}

output "activator_target_group_arn" {
  description = "The activator's target group (null when the activator is off)."
  value       = one(aws_lb_target_group.activator[*].arn)
}

output "codebuild_project_name" {
  description = "The Terraform CodeBuild project (null when none is created)."
  value       = try(aws_codebuild_project.terraform["terraform"].name, null)
}

output "dashboard_name" {
  description = "The CloudWatch dashboard (null when none is created)."
  value       = one(aws_cloudwatch_dashboard.controller[*].dashboard_name)
}
