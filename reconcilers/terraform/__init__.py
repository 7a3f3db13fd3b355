"""Terraform runners: CodeBuild (production) and a local cli runner (development)."""
