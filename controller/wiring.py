"""The one place that builds a controller from its settings: the CLI, the sandbox, the
benchmarks and the tests all call `build_controller`.

The registered observers and reconcilers are listed here, in the order they run. Adding a policy
is writing its module in `reconcilers/` and adding it to `_reconcilers` below.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from controller.core.aws import AwsClients
from controller.core.clock import Clock, SystemClock
from controller.core.lease import DynamoDbLease, lease_key
from controller.core.settings import Settings
from controller.core.shards import owner
from controller.core.state_store import StateStore
from controller.core.store_url import open_state_store
from controller.desired.file_source import FileSource
from controller.desired.git_source import GitCredentials, GitSource, parse_git_location
from controller.desired.source import DesiredStateSource
from controller.desired.tracker import DesiredStateTracker
from controller.engine.cloudwatch import ServiceMetricsPublisher
from controller.engine.controller import Controller
from controller.engine.event_log import EventLog
from controller.engine.leadership import LEASE_SECONDS, Leadership
from controller.engine.memory import StateMemory
from controller.engine.metrics import ControllerMetrics
from controller.engine.pass_engine import AnyReconciler, PassEngine
from controller.engine.reporter import Reporter
from controller.notifications.delivery import Notifier
from controller.notifications.senders import Senders
from reconcilers.idle.decision import activator_wake, wake_refusal
from reconcilers.idle.reconciler import IdleReconciler
from reconcilers.interface import Observer
from reconcilers.power.reconciler import PowerReconciler
from reconcilers.routing.reconciler import RoutingReconciler
from reconcilers.services import ServiceObserver
from reconcilers.task_sizes import TaskSizeObserver
from reconcilers.terraform.cli_runner import CliRunner
from reconcilers.terraform.codebuild_runner import CodeBuildRunner
from reconcilers.terraform.runner import TerraformRunner


@dataclass(frozen=True)
class IdleTuning:
    """The resolution of the idle policy's metric reads (the sandbox uses 10 s buckets)."""

    metric_period: timedelta = timedelta(minutes=1)
    lookback_margin: timedelta = timedelta(minutes=10)


def open_source(location: str, settings: Settings) -> DesiredStateSource:
    """A file path, or a `git+...` URL (raises ValueError for a malformed one)."""
    if not location.startswith("git+"):
        return FileSource(location, max_bytes=settings.max_desired_state_bytes)
    credentials = GitCredentials(
        token=settings.git_token.get_secret_value() if settings.git_token else None,
        username=settings.git_username,
        ssh_key=settings.git_ssh_key,
        known_hosts=settings.git_known_hosts,
    )
    return GitSource(
        parse_git_location(location),
        credentials,
        timeout=settings.git_timeout.total_seconds(),
        max_bytes=settings.max_desired_state_bytes,
    )


def _observers(settings: Settings, aws: AwsClients) -> list[Observer]:
    # a region's service reads get a quarter of the pass: a slow region fails alone, in time
    return [
        ServiceObserver(aws, region_budget=settings.effective_pass_timeout.total_seconds() / 4),
        TaskSizeObserver(aws, settings.fargate_prices),
    ]


def _reconcilers(
    settings: Settings, aws: AwsClients, memory: StateMemory, idle: IdleTuning
) -> list[AnyReconciler]:
    """The policies, in the order they decide for each environment: power first, so that the
    idle policy sees the power state of the same pass; routing after idle, so that a service
    scaled to zero has its traffic sent to the activator in the same pass."""
    runners: dict[str, TerraformRunner] = {
        "codebuild": CodeBuildRunner(aws),
        "cli": CliRunner(settings.runs_dir),
    }
    return [
        PowerReconciler(runners, memory),
        # a region's metric reads get 30 % of the pass: with the service reads (25 %), within
        # the 60 % observing may take, so a slow region fails alone and in time
        IdleReconciler(
            aws,
            idle.metric_period,
            idle.lookback_margin,
            region_budget=settings.effective_pass_timeout.total_seconds() * 0.3,
        ),
        RoutingReconciler(aws, memory, settings.activator_target_group),
    ]


def build_controller(
    settings: Settings,
    *,
    clock: Clock | None = None,
    source: DesiredStateSource | None = None,
    store: StateStore | None = None,
    idle: IdleTuning | None = None,
    aws_max_attempts: int = 5,
    aws_connect_timeout: float = 5.0,
    rng: random.Random | None = None,
) -> Controller:
    """A controller for `settings`; the keyword arguments replace one part (tests, sandbox).
    A one-shot command passes fewer attempts and a shorter connect timeout: it fails fast.

    Raises ValueError for a malformed desired-state location and StateStoreError for a
    malformed state store URL.
    """
    clock = clock or SystemClock()
    rng = rng or random.Random()
    metrics = ControllerMetrics()
    # one call, retries included, takes at most a fifth of the pass, less than a region's
    # budget: a hanging cluster fails its own environments, not its region's
    call_timeout = min(20.0, settings.effective_pass_timeout.total_seconds() / 5)
    aws = AwsClients(
        settings.aws_region,
        metrics.count_aws_call,
        max_attempts=aws_max_attempts,
        read_timeout=min(10.0, call_timeout),
        call_timeout=call_timeout,
        connect_timeout=aws_connect_timeout,
    )
    leadership = _leadership(settings, aws)
    fence = leadership.fence if leadership is not None else None  # every write checks the lease
    memory = StateMemory(
        store or open_state_store(settings.state_store, aws, settings.shard_of, fence)
    )
    reporter = Reporter(
        metrics,
        ServiceMetricsPublisher(aws, settings.cloudwatch_namespace),
        clock=clock,
        event_log=EventLog(memory.store),
    )
    # a sharded fleet tells the desired state's own events once, from shard 1
    reporter.tells_desired_state = settings.shard_of is None or settings.shard_of[0] == 1
    engine = PassEngine(
        _observers(settings, aws),
        _reconcilers(settings, aws, memory, idle or IdleTuning()),
        memory,
        reporter,
        clock,
        aws.region,
        rng,
    )
    tracker = DesiredStateTracker(
        source or open_source(settings.desired_state, settings),
        rng,
        owns=owner(settings.shard_of) if settings.shard_of else None,
    )
    controller = Controller(
        settings,
        tracker,
        engine,
        memory,
        reporter,
        metrics,
        clock,
        wake_refusal=wake_refusal,  # the idle policy is the one that wakes services
        activator_wake=activator_wake,
        closers=(aws.close,),
        notifier=Notifier(Senders(aws), clock, metrics.count_notification, rng=rng),
        leadership=leadership,
    )
    metrics.leader.set_function(lambda: 1.0 if controller.leading() else 0.0)
    return controller


def _leadership(settings: Settings, aws: AwsClients) -> Leadership | None:
    """With CONTROLLER_LEADER_ELECTION: the lease of this controller's shard (or the only one)."""
    if settings.leader_election is None:
        return None
    table = settings.leader_election.removeprefix("dynamodb://")
    key = lease_key(settings.shard_of)
    return Leadership(DynamoDbLease(aws, table, key, None, LEASE_SECONDS))
