# --- where and what the controller runs --------------------------------------------------------

variable "name" {
  description = "Prefix of every resource this module creates (task, service, roles, log group, target groups)."
  type        = string
  default     = "infra-controller"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, at most 23 characters (target group names are limited to 32)."
  }
}

variable "image" {
  description = "The controller's image (built from deploy/Dockerfile), e.g. 123456789012.dkr.ecr.eu-west-3.amazonaws.com/infra-controller:1.4.0."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository holding the image: the execution role may pull from it only. Null for an image in a public registry."
  type        = string
  default     = null
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster the controller's own task runs in."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the controller's task and of the activator's target group (the VPC of the load balancers it serves)."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the controller's task: private subnets with a NAT gateway or VPC endpoints (it calls AWS APIs and your git host)."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give the task a public IP (only for public subnets without NAT)."
  type        = bool
  default     = false
}

variable "cpu_architecture" {
  description = "ARM64 (cheaper) or X86_64: the image is built for both."
  type        = string
  default     = "ARM64"
  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture: ARM64 or X86_64."
  }
}

variable "cpu" {
  description = "Task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 512
}

variable "leader_election" {
  description = "Run two tasks with leader election in the state table (CONTROLLER_LEADER_ELECTION): one acts, the other waits to take over. Off: one task, replaced stop-first on a deployment."
  type        = bool
  default     = false
}

variable "read_only_root_filesystem" {
  description = "Mount the container's root file system read-only; the state directory /var/lib/infra-controller is a task volume."
  type        = bool
  default     = true
}

# --- the controller's settings (README, Configuration) -----------------------------------------

variable "desired_state" {
  description = "CONTROLLER_DESIRED_STATE: the git source of desired_state.yaml, e.g. git+https://github.com/acme/infra.git#branch=main&path=desired_state.yaml."
  type        = string
}

variable "interval" {
  description = "CONTROLLER_INTERVAL: time between passes (90s, 5m, 1h30m). The alerts assume 60s (deploy/prometheus/alerts.yml)."
  type        = string
  default     = "60s"
}

variable "dry_run" {
  description = "CONTROLLER_DRY_RUN: decide and log, never change AWS."
  type        = bool
  default     = false
}

variable "http_port" {
  description = "Port of /metrics, /healthz, /readyz, /status, the API and the webhook (CONTROLLER_HTTP_ADDR)."
  type        = number
  default     = 8080
}

variable "git_username" {
  description = "CONTROLLER_GIT_USERNAME sent with the git token (GitHub: x-access-token, GitLab: oauth2)."
  type        = string
  default     = "x-access-token"
}

variable "default_environment" {
  description = "CONTROLLER_DEFAULT_ENVIRONMENT: the environment of the earlier /infra/* interface (null: the only one)."
  type        = string
  default     = null
}

variable "extra_environment" {
  description = "More plain variables for the container, e.g. CONTROLLER_CORS_ORIGINS or CONTROLLER_FARGATE_PRICES."
  type        = map(string)
  default     = {}
}

# --- secrets: ARNs of Secrets Manager secrets or SSM SecureString parameters -------------------

variable "api_token_secret_arn" {
  description = "CONTROLLER_API_TOKEN (bearer token of wake, reconcile, suspend, power): Secrets Manager secret or SSM parameter ARN. Null: those endpoints answer 403."
  type        = string
  default     = null
}

variable "webhook_secret_arn" {
  description = "CONTROLLER_WEBHOOK_SECRET (HMAC secret of POST /hooks/git): Secrets Manager secret or SSM parameter ARN. Null: the webhook answers 403."
  type        = string
  default     = null
}

variable "git_token_secret_arn" {
  description = "CONTROLLER_GIT_TOKEN (HTTPS token of the git source): Secrets Manager secret or SSM parameter ARN. Null for a public repository."
  type        = string
  default     = null
}

variable "extra_secrets" {
  description = "More secret variables, NAME => ARN, e.g. the SLACK_WEBHOOK_URL a notification's url_from_env names."
  type        = map(string)
  default     = {}
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys encrypting those secrets (the execution role decrypts with them). Empty for the AWS-managed keys."
  type        = list(string)
  default     = []
}

# --- what the controller manages: every name its policy needs ----------------------------------

variable "managed_regions" {
  description = "Regions of the managed environments (empty: this module's region)."
  type        = list(string)
  default     = []
}

variable "managed_services" {
  description = "ECS services the controller observes and scales: cluster name, and service name (\"*\" for every service of the cluster)."
  type = list(object({
    cluster = string
    service = optional(string, "*")
  }))
  default = []
}

variable "managed_load_balancers" {
  description = "Names of the ALBs whose listener routes the activator switches (wake: on-request)."
  type        = list(string)
  default     = []
}

variable "codebuild_projects" {
  description = "Names of existing CodeBuild projects the controller runs Terraform with (runner: codebuild). The project this module creates is added."
  type        = list(string)
  default     = []
}

variable "notification_topic_arns" {
  description = "SNS topics the controller publishes notifications to (notifications of type sns)."
  type        = list(string)
  default     = []
}

variable "cloudwatch_namespace" {
  description = "CONTROLLER_CLOUDWATCH_NAMESPACE: the only namespace the controller may publish metrics in."
  type        = string
  default     = "InfraController"
}

# --- state, logs, network ----------------------------------------------------------------------

variable "state_table_name" {
  description = "DynamoDB table of the state store (and of the leader lease), partition key environment."
  type        = string
  default     = "infra-controller"
}

variable "state_table_deletion_protection" {
  description = "Refuse to delete the state table (it holds the runs in flight)."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the state table, the log groups and the CodeBuild project (null: AWS-managed keys)."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "How long the controller's logs (and the Terraform runs' build logs) are kept: they record every change it made, and why."
  type        = number
  default     = 365
}

variable "activator" {
  description = "Create the activator's target group and turn the activator on (CONTROLLER_ACTIVATOR_ADDR, CONTROLLER_ACTIVATOR_TARGET_GROUP)."
  type        = bool
  default     = true
}

variable "activator_port" {
  description = "Port of the activator's waiting pages."
  type        = number
  default     = 8081
}

variable "alb_security_group_ids" {
  description = "Security groups of the load balancers that reach the activator (and the webhook)."
  type        = list(string)
  default     = []
}

variable "prometheus_cidr_blocks" {
  description = "Networks of the Prometheus servers that scrape /metrics on the HTTP port."
  type        = list(string)
  default     = []
}

variable "service_discovery_namespace_id" {
  description = "A Cloud Map private DNS namespace: the task's address is registered there as NAME.NAMESPACE, for Prometheus's dns_sd_configs (deploy/prometheus/scrape-ecs.yml). Null: none."
  type        = string
  default     = null
}

variable "git_ssh" {
  description = "Allow outbound SSH (port 22) for a git+ssh:// desired state."
  type        = bool
  default     = false
}

variable "webhook" {
  description = "Route the git host's push webhook (POST /hooks/git) to the controller through an ALB listener: its ARN, the host it answers (null: any) and the rule's priority."
  type = object({
    listener_arn = string
    host         = optional(string)
    priority     = optional(number, 100)
  })
  default = null
}

# --- Terraform runs in CodeBuild ---------------------------------------------------------------

variable "codebuild_project" {
  description = "Create a CodeBuild project that runs Terraform with deploy/buildspec.yml (runner: codebuild). Null: none."
  type = object({
    name                = string
    source_type         = optional(string, "GITHUB")
    source_location     = string
    source_version      = optional(string)
    environments_dir    = optional(string, "infra/envs")
    terraform_version   = optional(string, "1.9.8")
    timeout_minutes     = optional(number, 60)
    compute_type        = optional(string, "BUILD_GENERAL1_SMALL")
    policy_arns         = optional(list(string), [])
    vpc_subnet_ids      = optional(list(string), [])
    vpc_security_groups = optional(list(string), [])
  })
  default = null
}

# --- dashboard ---------------------------------------------------------------------------------

variable "dashboard" {
  description = "Create the CloudWatch dashboard (desired count, service status, ALB requests and 503s, power state, savings)."
  type        = bool
  default     = true
}

variable "dashboard_load_balancers" {
  description = "ALBs drawn on the dashboard, as CloudWatch's LoadBalancer dimension (app/NAME/ID, the ARN's suffix)."
  type        = list(string)
  default     = []
}

variable "dashboard_task_hourly_cost" {
  description = "USD per hour of one managed service's task while awake, for the dashboard's idle savings estimate (0.25 vCPU / 0.5 GB on Fargate ARM64: about 0.0099)."
  type        = number
  default     = 0.0099
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
