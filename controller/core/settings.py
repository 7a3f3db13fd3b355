"""Controller settings (contract section 3): every flag also reads a `CONTROLLER_*` variable.

Flags are passed as constructor arguments, which pydantic-settings ranks above the environment.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.core.desired_state import DEFAULT_MAX_DESIRED_STATE_BYTES
from controller.core.durations import Duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTROLLER_", extra="ignore", frozen=True)

    desired_state: str = "desired_state.yaml"
    interval: Duration = timedelta(seconds=60)
    http_addr: str = "127.0.0.1:8080"
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    state_store: str = "file://.controller-state.json"
    dry_run: bool = False
    log_format: Literal["json", "console"] | None = None
    cloudwatch_namespace: str = "InfraController"
    # where the cli Terraform runner keeps each run's pid and outcome (survives a restart)
    runs_dir: str = ".infra-controller-runs"
    # a pass that takes longer than this is cut short; defaults to the interval
    pass_timeout: Duration | None = None
    # git sources: an HTTPS token (sent as basic auth with git_username), or an SSH key file
    # and a known_hosts file; a fetch taking longer than git_timeout fails
    git_token: SecretStr | None = None
    git_username: str = "x-access-token"
    git_ssh_key: str | None = None
    git_known_hosts: str | None = None
    git_timeout: Duration = timedelta(seconds=60)
    # a larger desired-state document is refused unparsed (contract section 13)
    max_desired_state_bytes: int = Field(DEFAULT_MAX_DESIRED_STATE_BYTES, ge=1)
    aws_region: str | None = Field(
        None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "aws_region")
    )

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("the interval must be at least 1s")
        return value

    @field_validator("http_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("api_token", "webhook_secret", "git_token")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @property
    def http_host(self) -> str:
        return self.http_addr.rpartition(":")[0].strip("[]")

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rpartition(":")[2])

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"

    @property
    def effective_pass_timeout(self) -> timedelta:
        return self.pass_timeout or max(self.interval, timedelta(seconds=10))
