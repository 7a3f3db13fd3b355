"""The cli Terraform runner against a stand-in `terraform` speaking the -json format:
arguments, log events, exit codes, a slow apply, exactly one SIGINT, a controller restart, a
supervisor killed under a running terraform, the controller's secrets kept from terraform."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation, RunInfo
from reconcilers.terraform.cli_runner import CliRunner
from reconcilers.terraform.runner import RunnerError, RunStatus, RunToPoll
from tests.conftest import fake_terraform_behaviour
from tests.run_processes import environment_names, processes_naming, run_record, running
from tests.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


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
    assert any(e["event"] == "terraform resource done" for e in events)


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


def item(s: TerraformSpec, run_id: str) -> RunToPoll:
    return RunToPoll(
        "staging", RunInfo("cli", "apply", "t", datetime.now(UTC), run_id), s, "eu-west-3"
    )


async def start_then_kill_the_supervisor(
    runner: CliRunner, s: TerraformSpec, runs: Path, token: str, step: str = "apply"
) -> tuple[str, int]:
    """Start a run, SIGKILL its supervisor once terraform runs `step`: (run id, terraform pid)."""
    started = await runner.start("staging", s, "eu-west-3", "apply", token)
    run_file = runs / f"{token}.json"
    await until(
        lambda: (
            run_record(run_file).get("step") == step
            and step in [c["argv"][0] for c in invocations(Path(s.workdir or "."))]
        )
    )
    record = run_record(run_file)
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    await until(lambda: not running(record["supervisor_pid"], "supervisor"))
    return started.run_id, record["pid"]


async def test_a_run_whose_supervisor_died_is_in_progress_until_its_terraform_exits(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 2})
    runner, s, binary = CliRunner(str(tmp_path / "runs")), spec(fake_terraform), "terraform"
    run_id, pid = await start_then_kill_the_supervisor(runner, s, tmp_path / "runs", "o1")
    status = (await runner.poll([item(s, run_id)]))["staging"]
    assert running(pid, binary)  # terraform goes on without its supervisor
    assert status.state == "IN_PROGRESS"
    assert f"terraform apply (pid {pid}) still running but its supervisor is gone" in status.detail
    done = await wait_done(runner, s, run_id)
    assert not running(pid, binary)  # over only once terraform is gone
    assert done == RunStatus("FAILED", "the run's process ended without an outcome: unknown")
    assert sigints(fake_terraform) == 0
    await runner.close(grace_seconds=1)


async def test_a_live_process_that_is_not_the_runs_terraform_is_a_reused_pid(
    fake_terraform: Path, tmp_path: Path
) -> None:
    binary = shutil.which("terraform")
    assert binary is not None
    runs = tmp_path / "runs"
    runs.mkdir()
    # the supervisor and terraform are long gone; their pids now belong to other programs
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    try:
        record = {"state": "IN_PROGRESS", "step": "apply", "binary": binary}
        (runs / "p1.json").write_text(
            json.dumps({**record, "supervisor_pid": stranger.pid, "pid": stranger.pid})
        )
        status = await CliRunner(str(runs)).poll([item(spec(fake_terraform), "cli:p1")])
        assert status["staging"].state == "FAILED"
    finally:
        stranger.kill()
        await stranger.wait()


async def test_terraform_never_starts_when_its_supervisor_dies_before_recording_its_pid(
    fake_terraform: Path, tmp_path: Path
) -> None:
    binary = shutil.which("terraform")
    assert binary is not None
    dies = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from reconcilers.terraform.supervisor import Supervisor\n"
        "class Dies(Supervisor):\n"
        "    def record(self, **fields):\n"
        "        if fields.get('step') == 'apply' and fields.get('pid'):\n"
        "            os._exit(9)  # killed between starting apply and recording its pid\n"
        "        super().record(**fields)\n"
        "run, log, workdir, binary = sys.argv[1:]\n"
        "Dies(Path(run), Path(log), Path(workdir), binary, 'apply', 60).run()\n"
    )
    args = [str(tmp_path / "x.json"), str(tmp_path / "x.log"), str(fake_terraform), binary]
    died = await asyncio.create_subprocess_exec(
        sys.executable, "-c", dies, *args, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert await asyncio.wait_for(died.wait(), 30) == 9
    await until(lambda: not processes_naming(binary))
    # an apply nobody records could run beside the retry: it must not have run at all
    assert [c["argv"][0] for c in invocations(fake_terraform)] == ["init"]


async def test_stopping_a_run_whose_supervisor_died_sends_terraform_one_sigint_directly(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    runner, s = CliRunner(str(tmp_path / "runs")), spec(fake_terraform)
    run_id, pid = await start_then_kill_the_supervisor(runner, s, tmp_path / "runs", "o2")
    await runner.cancel(item(s, run_id))
    await runner.cancel(item(s, run_id))  # asked twice: still one SIGINT
    await runner.close(grace_seconds=10)  # shutdown, too, leaves it at one
    assert not running(pid, "terraform")
    assert sigints(fake_terraform) == 1


async def test_a_sigint_already_sent_by_the_dead_supervisor_is_never_repeated(
    fake_terraform: Path, tmp_path: Path
) -> None:
    # the supervisor times terraform out (one SIGINT), then dies during the graceful stop
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30, "stop_seconds": 3})
    runner, s = CliRunner(str(tmp_path / "runs")), spec(fake_terraform, timeout="1s")
    started = await runner.start("staging", s, "eu-west-3", "apply", "o3")
    await until(lambda: sigints(fake_terraform) == 1)
    record = run_record(tmp_path / "runs" / "o3.json")
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    await runner.cancel(item(s, started.run_id))
    status = await wait_done(runner, s, started.run_id)
    assert status.state == "FAILED"
    assert sigints(fake_terraform) == 1


async def test_a_run_whose_supervisor_died_still_gets_one_sigint_at_its_timeout(
    fake_terraform: Path, tmp_path: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 30})
    runner, s = CliRunner(str(tmp_path / "runs")), spec(fake_terraform, timeout="2s")
    run_id, pid = await start_then_kill_the_supervisor(runner, s, tmp_path / "runs", "o4")
    status = await wait_done(runner, s, run_id)  # each poll checks the run's deadline
    assert status.state == "FAILED"
    assert not running(pid, "terraform")
    assert sigints(fake_terraform) == 1


async def test_terraform_and_its_supervisor_never_see_the_controllers_settings(
    fake_terraform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CONTROLLER_API_TOKEN", "CONTROLLER_WEBHOOK_SECRET", "CONTROLLER_GIT_TOKEN"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("controller_git_token", "secret")  # settings are read case-insensitively
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("TF_VAR_region", "eu-west-3")
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1})
    runner = CliRunner(str(tmp_path / "runs"))
    started = await runner.start("staging", spec(fake_terraform), "eu-west-3", "apply", "e1")
    await until(lambda: len(invocations(fake_terraform)) >= 2)
    supervisor_pid = run_record(tmp_path / "runs" / "e1.json")["supervisor_pid"]
    supervisor_keys = environment_names(supervisor_pid)
    assert await wait_done(runner, spec(fake_terraform), started.run_id) == RunStatus(
        "SUCCEEDED", "terraform apply succeeded"
    )
    for keys in [supervisor_keys, *(set(c["env"]) for c in invocations(fake_terraform))]:
        assert not [k for k in keys if k.upper().startswith("CONTROLLER_")]
        assert {"AWS_ACCESS_KEY_ID", "TF_VAR_region", "PATH", "HOME"} <= keys
