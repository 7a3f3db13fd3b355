"""infra-controller: keeps ECS Fargate environments at the state written in git."""

__version__ = "0.1.0"
