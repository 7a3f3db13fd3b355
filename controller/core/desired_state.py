"""The desired-state file, version 1 (contract section 4), as pydantic models.

Unknown keys are errors, `power` accepts YAML 1.1 booleans, durations are `90s`/`5m`/`1h30m`.
Every other field is strict: `version: true`, `active_count: '3'` or `suspend: 'yes'` are refused
rather than converted. Loading with file positions lives in `controller.desired.loader`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from controller.core.durations import Duration
from controller.core.schedule import Schedule
from controller.core.schedule_rules import power_schedule_problems

ENVIRONMENT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# [0-9], not \d: pydantic's regex engine gives \d every Unicode digit
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"

# Limits on a document (contract section 13): hostile input is rejected before it costs much.
DEFAULT_MAX_DESIRED_STATE_BYTES = 1024 * 1024  # CONTROLLER_MAX_DESIRED_STATE_BYTES
MAX_DESIRED_STATE_NODES = 10_000  # after alias expansion
MAX_DESIRED_STATE_DEPTH = 64  # nested mappings and sequences


def _power(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads a bare `on`/`off` as true/false: both spellings mean the same.
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


def _exact_version(value: Any) -> Any:
    # Literal[1] alone takes True and 1.0 (they compare equal to 1), even in strict mode
    if type(value) is not int:
        raise ValueError(f"expected the integer 1, got {value!r}")
    return value


PowerSetting = Annotated[
    Literal["on", "off"],
    BeforeValidator(_power),
    WithJsonSchema({"oneOf": [{"enum": ["on", "off"]}, {"type": "boolean"}]}),
]
EnvironmentName = Annotated[str, StringConstraints(pattern=ENVIRONMENT_NAME_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
# a DNS name as a browser sends it in `Host` (lower case, no port, no wildcard)
HostName = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    ),
    AfterValidator(str.lower),
]
MAX_HOSTS = 100


class _Strict(BaseModel):
    # strict: no type coercion ('3' is not 3, 'yes' is not true); `power` and durations convert
    # in their own validators, before the strict check
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TerraformSpec(_Strict):
    """How the environment's stack is applied and destroyed."""

    runner: Literal["codebuild", "cli"]
    project: NonEmpty | None = Field(None, description="codebuild: the CodeBuild project name")
    workdir: NonEmpty | None = Field(None, description="cli: directory to run terraform in")
    binary: Literal["terraform", "tofu"] = "terraform"
    timeout: Duration = timedelta(minutes=30)

    @model_validator(mode="after")
    def _runner_fields(self) -> TerraformSpec:
        if self.runner == "codebuild" and not self.project:
            raise ValueError("runner codebuild needs `project` (the CodeBuild project name)")
        if self.runner == "cli" and not self.workdir:
            raise ValueError("runner cli needs `workdir` (the directory to run terraform in)")
        if self.timeout <= timedelta(0):
            raise ValueError("terraform.timeout must be longer than 0s")
        return self


class ServiceRef(_Strict):
    """The ECS service the idle policy scales."""

    cluster: NonEmpty
    name: NonEmpty


class IdlePolicy(_Strict):
    """Scale the service to zero after `after` without ALB requests; wake it again."""

    after: Duration = Field(description="no ALB request for this long -> desiredCount 0")
    active_count: int = Field(1, ge=1, le=1000, description="desiredCount when awake")
    wake: Literal["manual", "on-request"] = "manual"
    keep_awake: Schedule | None = Field(
        None, description="periods inside which the service is never scaled to zero"
    )
    hosts: list[HostName] = Field(
        default_factory=list,
        max_length=MAX_HOSTS,
        description="host names the activator answers for this environment (wake: on-request)",
    )

    @model_validator(mode="after")
    def _positive_after(self) -> IdlePolicy:
        if self.after <= timedelta(0):
            raise ValueError("idle.after must be longer than 0s")
        return self


class CostSpec(_Strict):
    """What the environment costs, for the savings estimate (contract section 14)."""

    hourly_when_on: float = Field(
        ge=0, le=10_000, description="USD per hour the whole environment costs while powered on"
    )


class Environment(_Strict):
    power: PowerSetting
    region: Annotated[str, StringConstraints(pattern=REGION_PATTERN)] | None = None
    suspend: bool = False
    schedule: Schedule | None = Field(
        None, description="power is on only inside these periods (with power: on)"
    )
    terraform: TerraformSpec | None = None
    service: ServiceRef | None = None
    idle: IdlePolicy | None = None
    cost: CostSpec | None = None

    @model_validator(mode="after")
    def _schedule_leaves_time_for_runs(self) -> Environment:
        problems = power_schedule_problems(self.schedule) if self.schedule else []
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _idle_needs_service(self) -> Environment:
        if self.idle is not None and self.service is None:
            raise ValueError("`idle` needs `service` (the ECS service to scale)")
        return self


MAX_NOTIFICATIONS = 20
# the controller's own settings and AWS credentials are never a notification's secret: a
# desired state from git could otherwise send them to a URL of its choosing
_RESERVED_VARIABLE_PREFIXES = ("CONTROLLER_", "AWS_")


def _not_reserved(name: str) -> str:
    if name.startswith(_RESERVED_VARIABLE_PREFIXES):
        raise ValueError(
            f"{name} is one of the controller's own variables; "
            "give the notification its own variable"
        )
    return name


VariableName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    AfterValidator(_not_reserved),
]
TopicArn = Annotated[
    str,
    StringConstraints(
        pattern=r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$"
    ),
]
Category = Literal["power", "error", "wake", "idle", "override", "desired_state"]
NOTIFICATION_CATEGORIES: tuple[Category, ...] = get_args(Category)


class Notification(_Strict):
    """Where events are sent (contract section 11). Secrets come from the environment."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    type: Literal["slack", "webhook", "sns"]
    url_from_env: VariableName | None = Field(
        None, description="slack, webhook: the variable holding the URL"
    )
    secret_from_env: VariableName | None = Field(
        None, description="webhook: the variable holding the key of the HMAC signature"
    )
    topic_arn: TopicArn | None = Field(None, description="sns: the topic")
    events: list[Category] = Field(
        default_factory=lambda: list(NOTIFICATION_CATEGORIES),
        min_length=1,
        max_length=len(NOTIFICATION_CATEGORIES),
    )
    environments: list[EnvironmentName] = Field(
        default_factory=list, max_length=1000, description="empty: every environment"
    )

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Notification:
        if self.type in ("slack", "webhook") and not self.url_from_env:
            raise ValueError(f"type {self.type} needs `url_from_env` (the variable with the URL)")
        if self.type == "sns" and not self.topic_arn:
            raise ValueError("type sns needs `topic_arn`")
        if self.type != "sns" and self.topic_arn:
            raise ValueError("`topic_arn` is for type sns")
        if self.type == "sns" and self.url_from_env:
            raise ValueError("type sns takes `topic_arn`, not `url_from_env`")
        if self.type != "webhook" and self.secret_from_env:
            raise ValueError("`secret_from_env` (the HMAC signature) is for type webhook")
        return self


class DesiredState(_Strict):
    """The whole file: `version: 1`, the environments by name, where to send events."""

    version: Annotated[Literal[1], BeforeValidator(_exact_version)]
    environments: dict[EnvironmentName, Environment] = Field(default_factory=dict)
    notifications: list[Notification] = Field(default_factory=list, max_length=MAX_NOTIFICATIONS)

    @model_validator(mode="after")
    def _notifications_named_once_for_known_environments(self) -> DesiredState:
        names: set[str] = set()
        for notification in self.notifications:
            if notification.name in names:
                raise ValueError(f"notifications: two entries are named {notification.name}")
            names.add(notification.name)
            unknown = sorted(set(notification.environments) - set(self.environments))
            if unknown:
                raise ValueError(
                    f"notifications: {notification.name} names unknown environments: "
                    + ", ".join(unknown)
                )
        return self

    @model_validator(mode="after")
    def _one_environment_per_host(self) -> DesiredState:
        owners: dict[str, str] = {}
        for name, environment in self.environments.items():
            for host in environment.idle.hosts if environment.idle else ():
                if owners.setdefault(host, name) != name:
                    raise ValueError(
                        f"idle.hosts: {host} is listed by both {owners[host]} and {name}"
                    )
        return self
