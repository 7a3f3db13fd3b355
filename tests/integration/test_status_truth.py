"""`/status` tells what the last pass observed: a service that is gone is absent, a read that
failed is unknown, ages are never negative, and an estimate says where it comes from."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.core.aws import AwsClients
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.emulator import free_port
from controller.sandbox.traffic import send_requests
from tests.conftest import REGION, Harness, MakeController, fake_terraform_behaviour, pass_until

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, extra: str = "") -> str:
    return (
        "version: 1\nenvironments:\n  web:\n    power: on\n"
        f"{extra}    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: manual}\n"
    )


async def test_a_service_that_is_gone_is_shown_absent_not_as_it_was(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    assert h.status()["environments"]["web"]["service"]["desired"] == 1
    await seed_aws.call(
        "ecs", "DeleteService", REGION, cluster=stack.cluster, service=stack.service, force=True
    )
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    web = h.status()["environments"]["web"]
    assert web["service"]["observed"] == "absent"
    assert (web["service"]["desired"], web["service"]["running"]) == (None, None)
    assert web["service"]["active"] is False
    assert web["power"] == "STOPPED"  # without terraform: from the service's absence
    assert h.metric("infra_controller_service_active", environment="web") == 0


async def test_a_service_that_cannot_be_read_is_shown_unknown_with_the_reason(
    make_controller: MakeController, stack: DemoStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", f"http://127.0.0.1:{free_port()}")
    h: Harness = make_controller(desired(stack), max_attempts=1)
    await h.controller.reconcile_once()
    web = h.status()["environments"]["web"]
    assert web["service"]["observed"] == "unknown"
    assert web["service"]["error"]
    assert web["service"]["desired"] is None
    assert web["power"] is None  # not RUNNING: nothing was observed
    assert h.metric("infra_controller_service_desired_count", environment="web") == 0
    labels = {"environment": "web", "state": "RUNNING"}
    assert h.metric("infra_controller_power_state", **labels) == 0


async def test_the_time_since_the_last_request_is_never_negative(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    # past idle.after, when the requests are read again (not in the passes before)
    h.clock.advance(timedelta(minutes=5, seconds=30))
    # a request in the current minute (never the one before): its bucket ends after now
    now = h.clock.now()
    await send_requests(
        seed_aws, stack, 2, max(now.replace(second=0, microsecond=0), now - timedelta(seconds=1))
    )
    await h.controller.reconcile_once()
    assert h.status()["environments"]["web"]["service"]["seconds_since_last_request"] == 0


async def test_a_run_estimate_says_whether_it_comes_from_past_runs(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1.0}, destroy={"seconds": 1.0})
    body = (
        "version: 1\nenvironments:\n  lab:\n    power: {power}\n    region: eu-west-3\n"
        f"    terraform: {{{{runner: cli, workdir: {fake_terraform}}}}}\n"
    )
    h: Harness = make_controller(body.format(power="on"))
    await h.controller.reconcile_once()
    run = h.status()["environments"]["lab"]["current_run"]
    assert (run["estimate_from"], run["estimated_seconds_left"]) == ("default", 15 * 60)
    await pass_to(h, "RUNNING")
    h.write(body.format(power="off"))
    await pass_to(h, "STOPPED")
    h.write(body.format(power="on"))
    await h.controller.reconcile_once()
    run = h.status()["environments"]["lab"]["current_run"]
    assert run["estimate_from"] == "past runs"
    assert run["estimated_seconds_left"] < 60  # from the 1 s apply, not 15 minutes


async def pass_to(h: Harness, power: str) -> None:
    """Passes, as the loop would run them, until the run (a real process) has finished."""
    await pass_until(h, lambda report: report.environments["lab"].facts.power_state == power)
