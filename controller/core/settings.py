"""Controller settings (contract section 3): every flag also reads a `CONTROLLER_*` variable.

Flags are passed as constructor arguments, which pydantic-settings ranks above the environment.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from datetime import timedelta
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.core.desired_state import DEFAULT_MAX_DESIRED_STATE_BYTES
from controller.core.durations import Duration
from controller.core.fargate_prices import Architecture, Rate

TARGET_GROUP_ARN = re.compile(
    r"arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}"
)


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
    # the activator (contract section 9): where it serves waiting pages, and the target group
    # the load balancer reaches it through; both set, or neither
    activator_addr: str | None = None
    activator_target_group: str | None = None
    # the environment the earlier system's /infra/* interface acts on (default: the only one)
    default_environment: str | None = None
    # origins (comma-separated) whose browsers may read /status and /infra/status (CORS)
    cors_origins: str = ""
    # Fargate prices replacing or adding to the package's table (JSON: region -> x86|arm ->
    # {"vcpu_hour": USD, "gb_hour": USD}), for the idle lever's savings
    fargate_prices: dict[str, dict[Architecture, Rate]] = Field(default_factory=dict)
    # high availability (contract section 12): `dynamodb://TABLE`, the state store's table
    leader_election: str | None = None
    # very large fleets: `I/N` owns the environments whose name hashes to shard I of N
    shard: str | None = None

    @field_validator("fargate_prices")
    @classmethod
    def _prices_are_prices(
        cls, value: dict[str, dict[Architecture, Rate]]
    ) -> dict[str, dict[Architecture, Rate]]:
        for region, rates in value.items():
            for rate in rates.values():
                if not (0 <= rate.vcpu_hour <= 100 and 0 <= rate.gb_hour <= 100):
                    raise ValueError(f"{region}: prices are USD per hour, from 0 to 100")
        return value

    @field_validator("shard")
    @classmethod
    def _shard_of(cls, value: str | None) -> str | None:
        if not value:
            return None
        index, sep, count = value.partition("/")
        if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
            raise ValueError(f"expected I/N with 1 <= I <= N (e.g. 2/4), got {value!r}")
        if int(count) > 1000:
            raise ValueError("at most 1000 shards")
        return value

    @model_validator(mode="after")
    def _election_in_the_state_table(self) -> Settings:
        election = self.leader_election
        if election is None:
            return self
        if not election.startswith("dynamodb://") or election == "dynamodb://":
            raise ValueError("leader election takes dynamodb://TABLE")
        if self.state_store != election:
            raise ValueError(
                "leader election keeps its lease in the state table: set "
                f"CONTROLLER_STATE_STORE={election} too (the lease fences every state write)"
            )
        return self

    @model_validator(mode="after")
    def _shards_share_a_table(self) -> Settings:
        if self.shard is not None and not self.state_store.startswith("dynamodb://"):
            raise ValueError(
                "shards share their records in DynamoDB: set "
                "CONTROLLER_STATE_STORE=dynamodb://TABLE with CONTROLLER_SHARD"
            )
        return self

    @property
    def shard_of(self) -> tuple[int, int] | None:
        """(I, N) of `shard`, or None."""
        if self.shard is None:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("the interval must be at least 1s")
        return value

    @field_validator("http_addr", "activator_addr")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("activator_target_group")
    @classmethod
    def _target_group_arn(cls, value: str | None) -> str | None:
        if value and not TARGET_GROUP_ARN.fullmatch(value):
            raise ValueError(
                "expected a target group ARN "
                "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
            )
        return value or None

    @model_validator(mode="after")
    def _activator_complete(self) -> Settings:
        if (self.activator_addr is None) != (self.activator_target_group is None):
            raise ValueError(
                "the activator needs both CONTROLLER_ACTIVATOR_ADDR and "
                "CONTROLLER_ACTIVATOR_TARGET_GROUP"
            )
        return self

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def activator(self) -> bool:
        return self.activator_addr is not None and self.activator_target_group is not None

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


def setting_problems(exc: ValidationError, flags: Collection[str] = ()) -> list[str]:
    """One line per invalid setting, in the user's words: which setting, what is wrong, and
    where it can come from (its flag, when the command has one in `flags`, and its variable).
    Pydantic's own wording ("Value error, ...") means nothing to someone who typed a flag."""
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"invalid settings: {message}")
            continue
        name = str(error["loc"][0])
        sources = [f"--{name.replace('_', '-')}"] if name in flags else []
        sources += _variables(name)
        where = f" ({' / '.join(sources)})" if sources else ""
        lines.append(f"invalid setting {name}: {message}{where}")
    return lines


def _variables(name: str) -> list[str]:
    field = Settings.model_fields.get(name)
    if field is None:
        return []
    if isinstance(field.validation_alias, AliasChoices):
        return [str(a) for a in field.validation_alias.choices if str(a).isupper()]
    return [f"{Settings.model_config.get('env_prefix', '')}{name}".upper()]
