"""Powering environments on and off through the controller, with the cli runner and a stand-in
`terraform`: one run per change, converged environments left alone, failures backed off, a
restart mid-run that follows the run instead of starting another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from controller.core.aws import AwsClients
from controller.engine.passes import RETRY_EVERYTHING, PassReport, PassRequest
from controller.sandbox.demo_stack import create_demo_stack
from controller.sandbox.emulator import free_port
from tests.conftest import (
    REGION,
    Harness,
    MakeController,
    fake_terraform_behaviour,
    pass_until,
)
from tests.waiting import until

pytestmark = pytest.mark.integration


def desired(workdir: Path, power: str = "on", extra: str = "") -> str:
    return f"""
    version: 1
    environments:
      staging:
        power: {power}
        region: eu-west-3
        terraform: {{runner: cli, workdir: {workdir}, timeout: 5m}}
        {extra}
    """


def commands(workdir: Path) -> list[str]:
    path = workdir / "invocations.log"
    if not path.exists():
        return []
    return [json.loads(line)["argv"][0] for line in path.read_text().splitlines()]


def runs(workdir: Path) -> list[str]:
    return [c for c in commands(workdir) if c != "init"]


def state(report: PassReport) -> str | None:
    return report.environments["staging"].facts.power_state


def action(report: PassReport) -> str:
    return report.decision("staging", "power").action


def reason(report: PassReport) -> str:
    return report.decision("staging", "power").reason


async def test_power_on_applies_once_then_stays_converged(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    h: Harness = make_controller(desired(fake_terraform))
    first = await h.controller.reconcile_once()
    assert (state(first), action(first)) == (
        "STARTING",
        "terraform_apply",
    )
    done = await pass_until(h, lambda r: state(r) == "RUNNING")
    assert reason(done).startswith("apply succeeded after")
    for _ in range(3):
        h.clock.advance(timedelta(minutes=5))
        report = await h.controller.reconcile_once()
        assert action(report) == "none"
    assert runs(fake_terraform) == ["apply"]
    runs_total = "infra_controller_terraform_runs_total"
    assert h.metric(runs_total, environment="staging", operation="apply", outcome="succeeded") == 1
    power_state = "infra_controller_power_state"
    assert h.metric(power_state, environment="staging", state="RUNNING") == 1
    assert h.metric(power_state, environment="staging", state="STARTING") == 0


async def test_power_off_destroys_once_and_reports_stopped(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    h: Harness = make_controller(desired(fake_terraform))
    await pass_until(h, lambda r: state(r) == "RUNNING")
    h.write(desired(fake_terraform, power="off"))
    report = await h.controller.reconcile_once()
    assert (state(report), action(report)) == (
        "STOPPING",
        "terraform_destroy",
    )
    await pass_until(h, lambda r: state(r) == "STOPPED")
    assert runs(fake_terraform) == ["apply", "destroy"]


async def test_a_flip_during_a_run_waits_for_it_then_converges_to_the_latest(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1.0})
    h: Harness = make_controller(desired(fake_terraform))
    await h.controller.reconcile_once()
    h.write(desired(fake_terraform, power="off"))
    waiting = await h.controller.reconcile_once()
    assert action(waiting) == "none"
    assert "the destroy follows once it finishes" in reason(waiting)
    report = await pass_until(h, lambda r: action(r) != "none")
    assert action(report) == "terraform_destroy"
    await pass_until(h, lambda r: state(r) == "STOPPED")
    assert runs(fake_terraform) == ["apply", "destroy"]


async def test_a_failed_run_is_error_backed_off_in_minutes_and_retried_on_request(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"exit": 1})
    h: Harness = make_controller(desired(fake_terraform))
    report = await pass_until(h, lambda r: state(r) == "ERROR")
    assert "apply failed (terraform apply exited with 1)" in reason(report)
    assert h.status()["environments"]["staging"]["power_detail"]["failures"] == 1
    for _ in range(3):  # within the minute of backoff: no new run
        h.clock.advance(timedelta(seconds=15))
        assert action(await h.controller.reconcile_once()) == "none"
    assert runs(fake_terraform) == ["apply"]
    h.clock.advance(timedelta(seconds=20))
    retried = await h.controller.reconcile_once()
    assert action(retried) == "terraform_apply"
    await pass_until(h, lambda r: state(r) == "ERROR")
    # the second failure waits 2 minutes, but POST /reconcile retries at once
    assert action(await h.controller.reconcile_once()) == "none"
    forced = await h.controller.reconcile_once(RETRY_EVERYTHING)
    assert action(forced) == "terraform_apply"
    runs_total = "infra_controller_terraform_runs_total"
    assert h.metric(runs_total, environment="staging", operation="apply", outcome="failed") == 2


async def test_a_restart_mid_run_follows_the_run_instead_of_starting_another(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1.0})
    first: Harness = make_controller(desired(fake_terraform))
    await first.controller.reconcile_once()
    # restart once terraform apply runs (between init and apply a real restart would have
    # stopped the sequence, which is the "outcome unknown" case of the runner's tests)
    await until(lambda: runs(fake_terraform) == ["apply"])
    # a new controller process: same state store, same runs directory, nothing in memory
    restarted: Harness = make_controller(desired(fake_terraform))
    report = await restarted.controller.reconcile_once()
    assert (state(report), action(report)) == ("STARTING", "none")
    await pass_until(restarted, lambda r: state(r) == "RUNNING")
    assert runs(fake_terraform) == ["apply"]


async def test_a_removed_environment_is_never_destroyed(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    h: Harness = make_controller(desired(fake_terraform))
    await pass_until(h, lambda r: state(r) == "RUNNING")
    h.write("version: 1\nenvironments: {}\n")
    for _ in range(3):
        h.clock.advance(timedelta(hours=1))
        assert (await h.controller.reconcile_once()).results == {}
    assert runs(fake_terraform) == ["apply"]


async def test_dry_run_and_plan_show_the_run_they_would_start(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    h: Harness = make_controller(desired(fake_terraform, power="off"))
    planned = await h.controller.reconcile_once(act=False, persist=False)
    assert planned.summary("staging") == (
        "terraform_destroy",
        "power off and the environment is unknown",
    )
    assert planned.pending
    dry: Harness = make_controller(desired(fake_terraform), dry_run=True)
    report = await dry.controller.reconcile_once()
    assert action(report) == "terraform_apply"
    assert commands(fake_terraform) == []


async def test_status_shows_the_run_its_start_and_the_time_left(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1.0})
    h: Harness = make_controller(desired(fake_terraform))
    await h.controller.reconcile_once()
    status = h.status()["environments"]["staging"]
    assert status["power"] == "STARTING"
    assert status["current_run"]["operation"] == "apply"
    assert status["current_run"]["run_id"].startswith("cli:")
    assert (
        status["estimated_seconds_left"] == 15 * 60
    )  # no history yet: the earlier system's figure
    assert status["run_started_at"].endswith("Z")
    await pass_until(h, lambda r: state(r) == "RUNNING")
    last = h.status()["environments"]["staging"]["power_detail"]["last_run"]
    assert (last["operation"], last["outcome"]) == ("apply", "succeeded")


async def test_a_run_that_cannot_start_is_an_error_with_backoff(
    make_controller: MakeController, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir"
    h: Harness = make_controller(desired(missing))
    report = await h.controller.reconcile_once()
    assert h.status()["environments"]["staging"]["power"] == "ERROR"
    detail = h.status()["environments"]["staging"]["power_detail"]["last_run"]["detail"]
    assert "could not start" in detail
    assert action(report) == "terraform_apply"
    assert action(await h.controller.reconcile_once()) == "none"


async def test_wakes_and_pushes_never_retry_a_failed_run_only_a_reconcile_of_it_does(
    make_controller: MakeController, fake_terraform: Path, seed_aws: AwsClients
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"exit": 1})
    (stack,) = await create_demo_stack(seed_aws, REGION)
    web = (
        "      web:\n        power: on\n"
        f"        service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "        idle: {after: 5m, wake: manual}\n"
    )
    h: Harness = make_controller(desired(fake_terraform).rstrip(" ") + web)
    await pass_until(h, lambda r: state(r) == "ERROR")  # the apply failed: retry in a minute
    controller = h.controller
    stop = asyncio.Event()
    loop = asyncio.create_task(controller.run(stop))

    async def triggered(trigger: Callable[[], object]) -> None:
        """Trigger a pass and wait for it (the clock never moves: nothing else starts one)."""
        passes = controller.snapshot().passes_completed
        trigger()
        await until(lambda: controller.snapshot().passes_completed > passes)

    try:
        await until(lambda: controller.snapshot().passes_completed >= 1)
        for _ in range(5):
            await triggered(lambda: controller.request_wake("web"))
        await triggered(lambda: controller.request_pass(PassRequest(fetch_now=True)))  # a push
        await triggered(lambda: controller.request_retry("web"))  # another environment's retry
        applies = ("infra_controller_actions_total", "staging", "terraform_apply")
        assert h.metric(applies[0], environment=applies[1], action=applies[2]) == 1
        await triggered(lambda: controller.request_retry("staging"))
        assert h.metric(applies[0], environment=applies[1], action=applies[2]) == 2
        await until(lambda: runs(fake_terraform) == ["apply", "apply"])
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)


async def test_a_failed_read_on_an_empty_store_never_leads_to_a_run(
    make_controller: MakeController,
    fake_terraform: Path,
    seed_aws: AwsClients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (stack,) = await create_demo_stack(seed_aws, REGION)  # the stack is up, the store is empty
    service = f"service: {{cluster: {stack.cluster}, name: {stack.service}}}"
    body = desired(fake_terraform, extra=service)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", f"http://127.0.0.1:{free_port()}")
    blind: Harness = make_controller(body, max_attempts=1)
    report = await blind.controller.reconcile_once()
    assert (action(report), state(report)) == ("none", None)
    assert report.results["staging"] == "error"
    assert "service state unknown" in report.summary("staging")[1]
    assert blind.status()["environments"]["staging"]["power"] is None  # unknown, not a guess
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS")
    seeing: Harness = make_controller(body)  # same store: nothing was recorded from the guess
    report = await seeing.controller.reconcile_once()
    assert (action(report), state(report)) == ("none", "RUNNING")
    assert commands(fake_terraform) == []
