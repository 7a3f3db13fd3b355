"""The power policy: Terraform apply for `power: on`, destroy for `power: off`, one run at a
time per environment, followed across restarts (STOPPED/STARTING/RUNNING/STOPPING/ERROR)."""
