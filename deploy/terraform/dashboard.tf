# The CloudWatch dashboard the earlier Lambda system had (service status, desired count, ALB
# requests), with the 503s, the power state of every environment and what sleeping saved.
locals {
  # Every CloudWatch metric the dashboard draws, [namespace, name]: the controller's custom
  # metrics (controller/engine/cloudwatch.py) and the ALB metrics its idle policy reads.
  # tests/deploy/test_dashboards.py checks each against the code.
  dashboard_metrics = {
    service_status = [var.cloudwatch_namespace, "ServiceStatus"]
    desired_count  = [var.cloudwatch_namespace, "ServiceDesiredCount"]
    alb_requests   = ["AWS/ApplicationELB", "RequestCount"]
    alb_503        = ["AWS/ApplicationELB", "HTTPCode_ELB_503_Count"]
  }

  interval_seconds = max(1, sum([
    try(tonumber(regex("(\\d+)h", var.interval)[0]), 0) * 3600,
    try(tonumber(regex("(\\d+)m", var.interval)[0]), 0) * 60,
    try(tonumber(regex("(\\d+)s", var.interval)[0]), 0),
  ]))
  # Logs Insights queries of the controller's JSON log lines (README, Logs): every pass logs a
  # `decision` line per environment, with its power_state. tests/deploy checks the events and
  # fields they read against real log lines.
  log_source = "SOURCE '${aws_cloudwatch_log_group.controller.name}'"
  log_queries = {
    power_state   = "${local.log_source} | filter event = 'decision' | stats latest(power_state) as power, latest(action) as last_action, latest(reason) as why, max(@timestamp) as seen by environment | sort environment"
    power_changes = "${local.log_source} | filter event = 'power state changed' | fields @timestamp, environment, previous, state, reason | sort @timestamp desc | limit 50"
    hours_off     = "${local.log_source} | filter event = 'decision' and power_state = 'STOPPED' | stats count(*) * ${local.interval_seconds} / 3600 as hours_off by environment | sort hours_off desc"
  }

  # one series per managed service (dimensions Cluster and Service), found by SEARCH
  service_search = {
    for key in ["service_status", "desired_count"] : key => format(
      "SEARCH('{%s,Cluster,Service} MetricName=\"%s\"', 'Maximum', 60)",
      local.dashboard_metrics[key][0], local.dashboard_metrics[key][1],
    )
  }
  # the listed load balancers, or every one of the account's in the region
  alb_filter = length(var.dashboard_load_balancers) == 0 ? "" : format(
    " (%s)", join(" OR ", [for lb in var.dashboard_load_balancers : "LoadBalancer=\"${lb}\""])
  )
  alb_search = {
    for key in ["alb_requests", "alb_503"] : key => format(
      "SEARCH('{%s,LoadBalancer} MetricName=\"%s\"%s', 'Sum', 60)",
      local.dashboard_metrics[key][0], local.dashboard_metrics[key][1], local.alb_filter,
    )
  }

  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title   = "Service status (1 awake, 0 asleep)"
        region  = local.region
        view    = "timeSeries"
        stat    = "Maximum"
        period  = 60
        metrics = [[{ expression = local.service_search.service_status, id = "e1", label = "" }]]
        yAxis   = { left = { min = 0, max = 1 } }
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Desired task count"
        region  = local.region
        view    = "timeSeries"
        stat    = "Maximum"
        period  = 60
        metrics = [[{ expression = local.service_search.desired_count, id = "e1", label = "" }]]
        yAxis   = { left = { min = 0 } }
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title   = "ALB requests (what keeps a service awake)"
        region  = local.region
        view    = "timeSeries"
        stat    = "Sum"
        period  = 60
        metrics = [[{ expression = local.alb_search.alb_requests, id = "e1", label = "" }]]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title   = "ALB 503s (visitors of a sleeping service without the activator)"
        region  = local.region
        view    = "timeSeries"
        stat    = "Sum"
        period  = 60
        metrics = [[{ expression = local.alb_search.alb_503, id = "e1", label = "" }]]
      }
    },
    {
      type = "log", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "Power state of each environment (its last decision)"
        region = local.region
        view   = "table"
        query  = local.log_queries.power_state
      }
    },
    {
      type = "log", x = 12, y = 12, width = 12, height = 6
      properties = {
        title  = "Power state changes"
        region = local.region
        view   = "table"
        query  = local.log_queries.power_changes
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 12, height = 6
      properties = {
        title  = "Estimated savings of sleeping services (USD, cumulative: hours asleep x task hourly cost)"
        region = local.region
        view   = "timeSeries"
        period = 3600
        metrics = [
          [{ expression = format("SEARCH('{%s,Cluster,Service} MetricName=\"%s\"', 'Average', 3600)", local.dashboard_metrics.service_status[0], local.dashboard_metrics.service_status[1]), id = "status", visible = false }],
          [{ expression = "RUNNING_SUM((1 - status) * ${var.dashboard_task_hourly_cost})", id = "saved", label = "" }],
        ]
      }
    },
    {
      type = "log", x = 12, y = 18, width = 12, height = 6
      properties = {
        title  = "Hours powered off in the period (the power lever; x cost.hourly_when_on = saved)"
        region = local.region
        view   = "table"
        query  = local.log_queries.hours_off
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "controller" {
  count          = var.dashboard ? 1 : 0
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
