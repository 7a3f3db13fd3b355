variable "region" {
  description = "Region of the controller and of the environments it manages."
  type        = string
  default     = "eu-west-3"
}

variable "image_tag" {
  description = "Tag of the image pushed to the infra-controller ECR repository."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the ALB and of the controller's task."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with NAT) for the controller's task."
  type        = list(string)
}

variable "alb_name" {
  description = "Name of the ALB in front of the managed services (the activator switches its routes)."
  type        = string
}

variable "https_listener_arn" {
  description = "HTTPS listener of that ALB: the git webhook reaches the controller through it."
  type        = string
}

variable "webhook_host" {
  description = "Host name the webhook is sent to (a DNS name of the ALB)."
  type        = string
}

variable "desired_state" {
  description = "git+https://github.com/ORG/REPO.git#branch=main&path=desired_state.yaml"
  type        = string
}

variable "managed_services" {
  description = "The ECS services the controller scales."
  type = list(object({
    cluster = string
    service = optional(string, "*")
  }))
}

variable "infra_repository_url" {
  description = "HTTPS URL of the repository with the environments' Terraform (infra/envs/NAME)."
  type        = string
}

variable "terraform_policy_arns" {
  description = "Policies that let the Terraform runs create and destroy the environments."
  type        = list(string)
}

variable "prometheus_cidr_blocks" {
  description = "Networks of the Prometheus servers that scrape the controller."
  type        = list(string)
  default     = []
}
