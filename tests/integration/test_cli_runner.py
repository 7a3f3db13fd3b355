"""The cli Terraform runner against a stand-in `terraform` speaking the -json format:
arguments, log events, exit codes, a slow apply, exactly one SIGINT, a controller restart."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation, RunInfo
from controller.logging_setup import configure_logging
from reconcilers.terraform.cli_runner import CliRunner
from reconcilers.terraform.runner import RunnerError, RunStatus, RunToPoll
from tests.conftest import fake_terraform_behaviour
from tests.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("json", stream=buffer)
    yield buffer
    structlog.reset_defaults()


def spec(workdir: Path, timeout: str = "5m", binary: str = "terraform") -> TerraformSpec:
    return TerraformSpec.model_validate(
        {"runner": "cli", "workdir": str(workdir), "timeout": timeout, "binary": binary}
    )


def invocations(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "invocations.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sigints(workdir: Path) -> int:
    path = workdir / "sigints.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def start_and_wait(
    runner: CliRunner, s: TerraformSpec, op: Operation = "apply", token: str = "t1"
) -> RunStatus:
    started = await runner.start("staging", s, "eu-west-3", op, token)
    return await wait_done(runner, s, started.run_id, op)


async def wait_done(
    runner: CliRunner, s: TerraformSpec, run_id: str, op: Operation = "apply"
) -> RunStatus:
    item = RunToPoll("staging", RunInfo("cli", op, "t", datetime.now(UTC), run_id), s, "eu-west-3")
    async with asyncio.timeout(20):
        # polls the runner like the loop does, once per (short) interval
        while (status := (await runner.poll([item]))["staging"]).state == "IN_PROGRESS":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return status


async def test_successful_apply_runs_init_then_apply_with_the_automation_flags(
    fake_terraform: Path, tmp_path: Path, logs: io.StringIO
) -> None:
    runner = CliRunner(str(tmp_path / "runs"))
    status = await start_and_wait(runner, spec(fake_terraform))
    assert status == RunStatus("SUCCEEDED", "terraform apply succeeded")
    await runner.close(grace_seconds=5)  # the log follower has read everything
    calls = invocations(fake_terraform)
    assert [c["argv"] for c in calls] == [
        ["init", "-input=false"],
        ["apply", "-input=false", "-auto-approve", "-json", "-lock-timeout=5m"],
    ]
    assert {c["TF_IN_AUTOMATION"] for c in calls} == {"1"}
    events = [json.loads(line) for line in logs.getvalue().splitlines()]
    summary = [e for e in events if e["event"] == "terraform change summary"]
    assert [(e["add"], e["remove"]) for e in summary] == [(1, 0), (1, 0)]
    assert all(e["environment"] == "staging" for e in summary)
    assert any(e["event"] == "terraform apply complete" for e in events)


async def test_tofu_destroy_uses_the_destroy_command(fake_terraform: Path, tmp_path: Path) -> None:
    runner = CliRunner(str(tmp_path / "runs"))
    status = await start_and_wait(runner, spec(fake_terraform, binary="tofu"), op="destroy")
    assert status.state == "SUCCEEDED"
    assert invocations(fake_terraform)[-1]["argv"][0] == "destroy"


async def test_failed_apply_is_a_failure_and_its_diagnostic_is_logged(
    fake_terraform: Path, tmp_path: Path, logs: io.StringIO
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"exit": 1})
    runner = CliRunner(str(tmp_path / "runs"))
    status = await start_and_wait(runner, spec(fake_terraform))
    assert status == RunStatus("FAILED", "terraform apply exited with 1")
    await runner.close(grace_seconds=5)
    diagnostics = [
        json.loads(line)
        for line in logs.getvalue().splitlines()
        if '"terraform diagnostic"' in line
    ]
    assert diagnostics[0]["summary"] == "creating ECS Service"
    assert diagnostics[0]["level"] == "error"


async def test_failed_init_stops_before_apply(fake_terraform: Path, tmp_path: Path) -> None:
    fake_terraform_behaviour(fake_terraform, init={"exit": 1})
    status = await start_and_wait(CliRunner(str(tmp_path / "runs")), spec(fake_terraform))
    assert status == RunStatus("FAILED", "terraform init exited with 1")
    assert [c["argv"][0] for c in invocations(fake_terraform)] == ["init"]


async def test_a_slow_apply_past_its_timeout_gets_exactly_one_sigint(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    status = await start_and_wait(CliRunner(str(tmp_path / "runs")), spec(fake_terraform, "1s"))
    assert status.state == "FAILED"
    assert status.detail.startswith("timed out after")
    assert sigints(fake_terraform) == 1


async def test_shutdown_interrupts_a_running_apply_once_and_waits_for_it(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    runner = CliRunner(str(tmp_path / "runs"))
    await runner.start("staging", spec(fake_terraform), "eu-west-3", "apply", "t1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    await runner.close(grace_seconds=10)
    assert sigints(fake_terraform) == 1
    outcome = json.loads((tmp_path / "runs" / "t1.json").read_text())
    assert outcome["state"] == "FAILED"


async def test_the_same_token_never_starts_a_second_run(
    fake_terraform: Path, tmp_path: Path
) -> None:
    runner = CliRunner(str(tmp_path / "runs"))
    first = await runner.start("staging", spec(fake_terraform), "eu-west-3", "apply", "same")
    second = await runner.start("staging", spec(fake_terraform), "eu-west-3", "apply", "same")
    assert first == second
    await wait_done(runner, spec(fake_terraform), first.run_id)
    again = await CliRunner(str(tmp_path / "runs")).start(
        "staging", spec(fake_terraform), "eu-west-3", "apply", "same"
    )
    assert again == first
    assert [c["argv"][0] for c in invocations(fake_terraform)] == ["init", "apply"]


async def test_a_restarted_controller_follows_the_running_process_then_reads_its_outcome(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1})
    first = CliRunner(str(tmp_path / "runs"))
    started = await first.start("staging", spec(fake_terraform), "eu-west-3", "apply", "r1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    restarted = CliRunner(str(tmp_path / "runs"))  # a new controller process, same runs dir
    item = RunToPoll(
        "staging",
        RunInfo("cli", "apply", "r1", datetime.now(UTC), started.run_id),
        spec(fake_terraform),
        "eu-west-3",
    )
    following = (await restarted.poll([item]))["staging"]
    assert following == RunStatus("IN_PROGRESS", "terraform apply running")
    assert (await wait_done(restarted, spec(fake_terraform), started.run_id)).state == "SUCCEEDED"
    assert [c["argv"][0] for c in invocations(fake_terraform)] == ["init", "apply"]


async def test_the_outcome_is_recorded_even_when_the_controller_is_gone(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 0.3})
    gone = CliRunner(str(tmp_path / "runs"))
    started = await gone.start("staging", spec(fake_terraform), "eu-west-3", "apply", "c1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    await gone.detach()  # the controller dies: nothing follows the run any more
    later = CliRunner(str(tmp_path / "runs"))
    assert (await wait_done(later, spec(fake_terraform), started.run_id)).state == "SUCCEEDED"


async def test_a_run_whose_process_died_has_an_unknown_outcome(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    runner = CliRunner(str(tmp_path / "runs"))
    started = await runner.start("staging", spec(fake_terraform), "eu-west-3", "apply", "d1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    record = json.loads((tmp_path / "runs" / "d1.json").read_text())
    os.kill(record["supervisor_pid"], signal.SIGKILL)  # e.g. the host was restarted
    os.kill(record["pid"], signal.SIGKILL)
    status = await wait_done(
        CliRunner(str(tmp_path / "runs")), spec(fake_terraform), started.run_id
    )
    assert status == RunStatus("FAILED", "the run's process ended without an outcome: unknown")
    await runner.close(grace_seconds=1)


async def test_a_missing_binary_refuses_to_start(tmp_path: Path) -> None:
    s = TerraformSpec.model_validate({"runner": "cli", "workdir": str(tmp_path), "binary": "tofu"})
    with pytest.raises(RunnerError, match="tofu not found on PATH"):
        await CliRunner(str(tmp_path / "runs")).start("x", s, "eu-west-3", "apply", "t")


async def test_cancel_interrupts_the_run_exactly_once(fake_terraform: Path, tmp_path: Path) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    runner = CliRunner(str(tmp_path / "runs"))
    s = spec(fake_terraform)
    started = await runner.start("staging", s, "eu-west-3", "apply", "k1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    item = RunToPoll(
        "staging", RunInfo("cli", "apply", "k1", datetime.now(UTC), started.run_id), s, "eu-west-3"
    )
    await runner.cancel(item)
    await runner.cancel(item)  # asked twice, still one SIGINT: a second would abort terraform
    status = await wait_done(runner, s, started.run_id)
    assert status == RunStatus("FAILED", "terraform apply exited with 1")
    assert sigints(fake_terraform) == 1
