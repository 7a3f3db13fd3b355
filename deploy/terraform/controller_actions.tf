locals {
  # Every AWS operation the controller calls, and the scope it is granted on (iam.tf): the one
  # list the task role's policy is built from. The test suite records each call the controller
  # makes (at its AWS layer, controller/core/aws.py) and checks this list against them both
  # ways (tests/deploy/test_iam.py): a new call is one line here. A DynamoDB transaction is
  # authorized item by item: the state store's fenced write (TransactWriteItems: a ConditionCheck
  # on the lease and a Put) needs ConditionCheckItem and PutItem.
  controller_actions = {
    "cloudwatch:GetMetricData"                   = "any"
    "cloudwatch:PutMetricData"                   = "metric_namespace"
    "codebuild:BatchGetBuilds"                   = "codebuild_projects"
    "codebuild:ListBuildsForProject"             = "codebuild_projects"
    "codebuild:StartBuild"                       = "codebuild_projects"
    "dynamodb:ConditionCheckItem"                = "state_table"
    "dynamodb:GetItem"                           = "state_table"
    "dynamodb:PutItem"                           = "state_table"
    "dynamodb:Scan"                              = "state_table"
    "dynamodb:UpdateItem"                        = "state_table"
    "ecs:DescribeServices"                       = "ecs_services"
    "ecs:DescribeTaskDefinition"                 = "any"
    "ecs:UpdateService"                          = "ecs_services"
    "elasticloadbalancing:DeregisterTargets"     = "activator_target_group"
    "elasticloadbalancing:DescribeListeners"     = "any"
    "elasticloadbalancing:DescribeLoadBalancers" = "any"
    "elasticloadbalancing:DescribeRules"         = "any"
    "elasticloadbalancing:DescribeTargetGroups"  = "any"
    "elasticloadbalancing:DescribeTargetHealth"  = "any"
    "elasticloadbalancing:ModifyListener"        = "load_balancer_routes"
    "elasticloadbalancing:ModifyRule"            = "load_balancer_routes"
    "elasticloadbalancing:RegisterTargets"       = "activator_target_group"
    "sns:Publish"                                = "notification_topics"
  }
}
