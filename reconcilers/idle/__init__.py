"""The idle policy: scale an ECS service to zero after `idle.after` without ALB requests, and
wake it again (on a 503 while asleep, or through the API)."""
