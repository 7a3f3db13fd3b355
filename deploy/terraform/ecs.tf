locals {
  state_dir = "/var/lib/infra-controller"
  # The container's health check, and the image's HEALTHCHECK: /healthz on the HTTP port
  # (200 while a pass completed within 3 intervals). tests/deploy runs this very command.
  health_check = "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CONTROLLER_HTTP_ADDR', ':8080').rpartition(':')[2], timeout=4)"

  # The settings the controller reads (README, Configuration); AWS_REGION comes from Fargate.
  environment = merge(
    {
      CONTROLLER_DESIRED_STATE        = var.desired_state
      CONTROLLER_INTERVAL             = var.interval
      CONTROLLER_HTTP_ADDR            = "0.0.0.0:${var.http_port}"
      CONTROLLER_STATE_STORE          = "dynamodb://${aws_dynamodb_table.state.name}"
      CONTROLLER_LOG_FORMAT           = "json"
      CONTROLLER_CLOUDWATCH_NAMESPACE = var.cloudwatch_namespace
      CONTROLLER_DRY_RUN              = tostring(var.dry_run)
      CONTROLLER_GIT_USERNAME         = var.git_username
    },
    var.activator ? {
      CONTROLLER_ACTIVATOR_ADDR         = "0.0.0.0:${var.activator_port}"
      CONTROLLER_ACTIVATOR_TARGET_GROUP = aws_lb_target_group.activator[0].arn
    } : {},
    var.leader_election ? { CONTROLLER_LEADER_ELECTION = "dynamodb://${aws_dynamodb_table.state.name}" } : {},
    var.default_environment == null ? {} : { CONTROLLER_DEFAULT_ENVIRONMENT = var.default_environment },
    var.extra_environment,
  )
  ports = concat([var.http_port], var.activator ? [var.activator_port] : [])
  # keyed by position: the groups' ids may be known only after apply
  alb_security_groups = { for i, id in var.alb_security_group_ids : tostring(i) => id }

  container = {
    name      = "controller"
    image     = var.image
    essential = true
    command   = ["run"]
    user      = "10001:10001"
    portMappings = [
      for port in local.ports : { containerPort = port, hostPort = port, protocol = "tcp" }
    ]
    environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
    secrets     = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]
    healthCheck = {
      command     = ["CMD", "python", "-c", local.health_check]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.controller.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "controller"
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
    readonlyRootFilesystem = var.read_only_root_filesystem
    mountPoints            = [{ sourceVolume = "state", containerPath = local.state_dir, readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    ulimits                = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    # SIGTERM, then at most this long: the controller exits within 10 s
    stopTimeout = 30
  }
}

resource "aws_cloudwatch_log_group" "controller" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_ecs_task_definition" "controller" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions    = jsonencode([local.container])
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
  # the state directory: the image's VOLUME, so it keeps the image's owner (the controller)
  volume {
    name = "state"
  }
  tags = var.tags
}

resource "aws_ecs_service" "controller" {
  name             = var.name
  cluster          = var.cluster_arn
  task_definition  = aws_ecs_task_definition.controller.arn
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  # One task; two with leader election (one acts, one waits). Without it a deployment stops the
  # old task before starting the new one: never two controllers acting at once.
  desired_count                      = var.leader_election ? 2 : 1
  deployment_minimum_healthy_percent = var.leader_election ? 50 : 0
  deployment_maximum_percent         = var.leader_election ? 200 : 100
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = false

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.controller.id]
    assign_public_ip = var.assign_public_ip
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  dynamic "service_registries" {
    for_each = aws_service_discovery_service.controller[*].arn
    content {
      registry_arn = service_registries.value
    }
  }
  dynamic "load_balancer" {
    for_each = var.webhook == null ? [] : [aws_lb_target_group.api[0].arn]
    content {
      target_group_arn = load_balancer.value
      container_name   = "controller"
      container_port   = var.http_port
    }
  }
  depends_on = [aws_iam_role_policy.task, aws_iam_role_policy.execution, aws_lb_listener_rule.webhook]
  tags       = var.tags
}

# The task's address in DNS (NAME.NAMESPACE, A records), for Prometheus to find and scrape.
resource "aws_service_discovery_service" "controller" {
  count = var.service_discovery_namespace_id == null ? 0 : 1
  name  = var.name
  dns_config {
    namespace_id   = var.service_discovery_namespace_id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
  tags = var.tags
}

# --- network -----------------------------------------------------------------------------------

resource "aws_security_group" "controller" {
  name        = var.name
  description = "infra-controller task: the activator and webhook from the ALBs, metrics from Prometheus"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "activator_from_alb" {
  for_each                     = var.activator ? local.alb_security_groups : {}
  security_group_id            = aws_security_group.controller.id
  description                  = "the activator's waiting pages, from a load balancer"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.activator_port
  to_port                      = var.activator_port
}

resource "aws_vpc_security_group_ingress_rule" "webhook_from_alb" {
  for_each                     = var.webhook == null ? {} : local.alb_security_groups
  security_group_id            = aws_security_group.controller.id
  description                  = "the git webhook (POST /hooks/git), from a load balancer"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.http_port
  to_port                      = var.http_port
}

resource "aws_vpc_security_group_ingress_rule" "metrics_from_prometheus" {
  for_each          = { for i, cidr in var.prometheus_cidr_blocks : tostring(i) => cidr }
  security_group_id = aws_security_group.controller.id
  description       = "/metrics, from Prometheus"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.controller.id
  description       = "AWS APIs, the git host (HTTPS), notifications"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "ssh" {
  count             = var.git_ssh ? 1 : 0
  security_group_id = aws_security_group.controller.id
  description       = "the git host, for a git+ssh:// desired state"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

# The activator's target group: the controller registers its own task in it at start and
# switches the routes of a sleeping service to it. It answers 404 to the health checker's host.
resource "aws_lb_target_group" "activator" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the activator's hop stays inside the VPC, like the services' own target groups
  count       = var.activator ? 1 : 0
  name        = "${var.name}-activator"
  target_type = "ip"
  protocol    = "HTTP"
  port        = var.activator_port
  vpc_id      = var.vpc_id
  health_check {
    path                = "/"
    matcher             = "200-499"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  deregistration_delay = 10
  tags                 = var.tags
}

# The git webhook through a load balancer: only POST /hooks/git reaches the controller.
resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the webhook is signed (HMAC) and its hop stays inside the VPC
  count       = var.webhook == null ? 0 : 1
  name        = "${var.name}-api"
  target_type = "ip"
  protocol    = "HTTP"
  port        = var.http_port
  vpc_id      = var.vpc_id
  health_check {
    path    = "/healthz"
    matcher = "200"
  }
  deregistration_delay = 10
  tags                 = var.tags
}

resource "aws_lb_listener_rule" "webhook" {
  count        = var.webhook == null ? 0 : 1
  listener_arn = var.webhook.listener_arn
  priority     = var.webhook.priority
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api[0].arn
  }
  condition {
    path_pattern {
      values = ["/hooks/git"]
    }
  }
  condition {
    http_request_method {
      values = ["POST"]
    }
  }
  dynamic "condition" {
    for_each = var.webhook.host == null ? [] : [var.webhook.host]
    content {
      host_header {
        values = [condition.value]
      }
    }
  }
  tags = var.tags
}
