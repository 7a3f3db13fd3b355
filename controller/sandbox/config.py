"""The sandbox's configuration: the controller's settings (the sandbox's own files, demo
interval and activator; the rest as `run` reads it) and the sandbox's own flags."""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from controller.core.durations import parse_duration
from controller.core.settings import Settings

REGION = "eu-west-3"
DEFAULT_ALB_ADDR = "127.0.0.1:8000"
DEFAULT_IDLE_AFTER = "30s"


@dataclass(frozen=True)
class SandboxConfig:
    settings: Settings
    token_generated: bool  # True: made for this run, so printed; False: the user's, never printed
    alb_host: str = "127.0.0.1"
    alb_port: int = 8000
    idle_after: timedelta = timedelta(seconds=30)


def sandbox_options(args: argparse.Namespace) -> tuple[str, int, timedelta]:
    """The load balancer stand-in's address and the demo's idle.after, from the flags (the
    defaults when absent). Raises ValueError, with the line to print, for an invalid one."""
    addr = getattr(args, "alb_addr", None) or DEFAULT_ALB_ADDR
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--alb-addr: expected HOST:PORT, got {addr!r}")
    text = getattr(args, "idle_after", None) or DEFAULT_IDLE_AFTER
    try:
        idle_after = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--idle-after: {exc}") from None
    if idle_after <= timedelta(0):
        raise ValueError(f"--idle-after: must be longer than 0s, got {text!r}")
    return host.strip("[]"), int(port), idle_after


def sandbox_settings(args: argparse.Namespace, workdir: Path) -> SandboxConfig:
    """The controller's settings: the sandbox's own files and demo interval; the rest as `run`
    reads it (a flag, else its CONTROLLER_* variable, else the default). Raises
    ValidationError for an invalid flag or variable, ValueError for an invalid sandbox flag."""
    flags = {
        key: value
        for key in ("http_addr", "log_format")
        if (value := getattr(args, key, None)) is not None
    }
    fixed: dict[str, Any] = {
        "desired_state": str(workdir / "desired_state.yaml"),
        "state_store": f"file://{workdir / 'state.json'}",
        "runs_dir": str(workdir / "runs"),
        "interval": "5s",  # validated from text, like a flag
        "aws_region": REGION,
        # the sandbox's own activator, set once its target group exists in the emulator
        "activator_addr": None,
        "activator_target_group": None,
    }
    options = sandbox_options(args)
    settings = Settings(**fixed, **flags)
    if settings.api_token is not None:
        return SandboxConfig(settings, False, *options)
    # without a token the API refuses every POST: the sandbox makes one so `wake` can be tried
    while (token := secrets.token_urlsafe(24)).startswith("-"):
        pass  # `--token -x...` would read as an option
    return SandboxConfig(Settings(**fixed, **flags, api_token=SecretStr(token)), True, *options)
