"""The command line as a user runs it: real subprocesses, exit codes, output and logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.core.aws import AwsClients
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import LocalAws, free_port
from tests.conftest import REGION

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def desired(stack: DemoStack) -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: manual}\n"
    )


@pytest.fixture
async def stack(seed_aws: AwsClients) -> DemoStack:
    (demo,) = await create_demo_stack(seed_aws, REGION)
    return demo


def test_validate_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nenvironments:\n  a:\n    power: maybe\n    colour: red\n")
    result = cli("validate", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}:4:12: environments.a.power: Input should be 'on' or 'off'",
        f"{bad}:5:5: environments.a.colour: unknown key 'colour'; allowed: power, region, suspend, "
        "terraform, service, idle",
    ]
    assert "Traceback" not in result.stderr


def test_validate_accepts_the_example_and_reads_the_default_path(tmp_path: Path) -> None:
    (tmp_path / "desired_state.yaml").write_text((ROOT / "desired_state.yaml").read_text())
    result = cli("validate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    missing = cli("validate", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("nope.yaml:1:1: cannot read")


def test_schema_prints_a_json_schema(tmp_path: Path) -> None:
    result = cli("schema", cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "DesiredState"


def test_run_once_and_plan_refuse_an_invalid_file_with_exit_2(
    tmp_path: Path, aws_env: LocalAws
) -> None:
    (tmp_path / "desired_state.yaml").write_text("version: 1\nenvironments:\n  a: {power: x}\n")
    for args in (("run", "--once"), ("plan",)):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1].startswith("desired_state.yaml:3:14: ")


def test_run_once_exits_0_and_logs_json_lines_with_pass_context(
    tmp_path: Path, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    result = cli("run", "--once", "--output", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["environments"]["demo"]["result"] == "success"
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    for line in lines:
        assert {"event", "level", "timestamp"} <= line.keys()
    in_pass = [line for line in lines if "reconcile_id" in line]
    assert {line["reconcile_id"] for line in in_pass} == {report["reconcile_id"]}
    decisions = [line for line in in_pass if line["event"] == "decision"]
    assert len(decisions) == 1
    assert decisions[0]["environment"] == "demo"
    assert decisions[0]["action"] == "none"
    assert decisions[0]["revision"] == report["revision"]
    assert decisions[0]["reason"]


def test_run_once_exits_1_when_an_environment_fails(tmp_path: Path, aws_env: LocalAws) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        "    service: {cluster: missing, name: missing}\n    idle: {after: 5m}\n"
    )
    assert cli("run", "--once", cwd=tmp_path).returncode == 1


def test_plan_exits_1_with_pending_actions_and_changes_nothing(
    tmp_path: Path, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    # a state store that says the service woke long ago: the plan is to scale it to zero
    (tmp_path / ".controller-state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "environments": {"demo": {"idle": {"awake_since": "2020-01-01T00:00:00+00:00"}}},
            }
        )
    )
    result = cli("plan", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("~ demo: scale_to_zero (no requests for at least")
    again = cli("plan", "--output", "json", cwd=tmp_path)
    assert json.loads(again.stdout)["environments"]["demo"]["action"] == "scale_to_zero"
    nothing = cli(
        "plan", cwd=tmp_path, env={"CONTROLLER_DESIRED_STATE": str(ROOT / "desired_state.yaml")}
    )
    assert nothing.returncode in (0, 2)


def test_plan_exits_0_when_nothing_is_to_do(tmp_path: Path, stack: DemoStack) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    result = cli("plan", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo: none (awake for 0s" in result.stdout


def _spawn(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`infra-controller ARGS` as a long-running process; its logs (stderr) are kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_daemon(
    tmp_path: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return _spawn(tmp_path, "run", "--http-addr", f"127.0.0.1:{port}", *extra, env=env)


def _start_sandbox(tmp_path: Path, port: int, workdir: Path) -> subprocess.Popen[str]:
    return _spawn(
        tmp_path,
        "sandbox",
        "--http-addr",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        "--workdir",
        str(workdir),
    )


def _interrupt_and_read_logs(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Ctrl-C the process, check it exits 0 in time, and return its JSON log lines."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    return [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]


def _wait_for_http(port: int, proc: subprocess.Popen[str]) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the daemon did not become ready")


def test_daemon_serves_status_and_wake_and_exits_0_on_sigterm(
    tmp_path: Path, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    port = free_port()
    proc = _start_daemon(tmp_path, port, env={"CONTROLLER_API_TOKEN": "tok"})
    try:
        _wait_for_http(port, proc)
        url = f"http://127.0.0.1:{port}"
        bare = url.removeprefix("http://")  # host:port, as CONTROLLER_HTTP_ADDR is written
        status = cli("status", "--url", bare, "--output", "json", cwd=tmp_path)
        assert status.returncode == 0
        assert "demo" in json.loads(status.stdout)["environments"]
        refused = cli("wake", "demo", "--url", url, "--token", "wrong", cwd=tmp_path)
        assert refused.returncode == 2
        assert "401" in refused.stderr
        accepted = cli(
            "wake", "demo", "--url", url, cwd=tmp_path, env={"CONTROLLER_API_TOKEN": "tok"}
        )
        assert accepted.returncode == 0, accepted.stderr
        token = {"CONTROLLER_API_TOKEN": "tok"}
        retried = cli("reconcile", "demo", "--url", url, cwd=tmp_path, env=token)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.startswith("demo: pass requested")
        everything = cli("reconcile", "--url", url, cwd=tmp_path, env=token)
        assert everything.returncode == 0, everything.stderr
        unknown = cli("reconcile", "nope", "--url", url, cwd=tmp_path, env=token)
        assert unknown.returncode == 2
        assert "404" in unknown.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli("status", "--url", url, cwd=tmp_path).returncode == 2  # unreachable now
    with_password = url.replace("http://", "http://admin:hunter2-secret@")
    for command in (("status",), ("wake", "demo"), ("reconcile",)):
        unreachable = cli(*command, "--url", with_password, cwd=tmp_path)
        assert unreachable.returncode == 2
        assert "hunter2-secret" not in unreachable.stderr + unreachable.stdout


def test_sandbox_starts_and_reconciles(tmp_path: Path, local_aws: LocalAws) -> None:
    port = free_port()
    proc = _start_sandbox(tmp_path, port, tmp_path / "sandbox")
    try:
        _wait_for_http(port, proc)
        import urllib.request

        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline and "infra_controller_reconcile_total{" not in body:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                body = r.read().decode()
            time.sleep(0.2)
        assert (
            'infra_controller_reconcile_total{environment="demo",reconciler="idle",result="success"}'
            in body
        )
        logs = _interrupt_and_read_logs(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [line["event"] for line in logs]
    assert "sandbox ready" in events
    assert any(line["event"] == "decision" and line["environment"] == "demo" for line in logs)
    assert any(line["event"] == "traffic" for line in logs)


def test_run_once_reads_a_git_source_and_reports_its_commit(
    tmp_path: Path, aws_env: LocalAws
) -> None:
    from tests.git_helpers import Repo

    repo = Repo(tmp_path / "origin")
    commit = repo.commit({"desired_state.yaml": "version: 1\nenvironments:\n  a: {power: off}\n"})
    result = cli(
        "run", "--once", "--output", "json", "--desired-state", repo.file_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["revision"] == commit


def test_run_once_on_an_unreachable_git_source_exits_2_without_credentials(tmp_path: Path) -> None:
    url = f"git+http://bot:hunter2-secret@127.0.0.1:{free_port()}/nothing.git"
    result = cli(
        "run", "--once", "--desired-state", url, cwd=tmp_path, env={"CONTROLLER_GIT_TIMEOUT": "10s"}
    )
    assert result.returncode == 2
    assert "git fetch from git+http://***@127.0.0.1" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_sandbox_power_cycle_destroys_and_recreates_the_demo_stack(
    tmp_path: Path, local_aws: LocalAws
) -> None:
    import urllib.request

    port = free_port()
    workdir = tmp_path / "sandbox"
    proc = _start_sandbox(tmp_path, port, workdir)

    def power() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            power: str | None = json.loads(r.read())["environments"].get("demo", {}).get("power")
        return power

    def wait_for(state: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and power() != state:
            time.sleep(0.2)
        assert power() == state

    try:
        _wait_for_http(port, proc)
        wait_for("RUNNING")
        stack = workdir / "infra" / "sandbox-stack.json"  # the stand-in re-reads it every run
        stack.write_text(json.dumps({**json.loads(stack.read_text()), "seconds": 1}))
        desired = workdir / "desired_state.yaml"
        desired.write_text(desired.read_text().replace("    power: on", "    power: off"))
        wait_for("STOPPED")
        desired.write_text(desired.read_text().replace("    power: off", "    power: on"))
        wait_for("RUNNING")
        logs = _interrupt_and_read_logs(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    started = [e["operation"] for e in logs if e["event"] == "terraform run started"]
    assert started == ["destroy", "apply"]


def test_run_once_leaves_a_cli_run_going_and_the_next_pass_reads_its_outcome(
    tmp_path: Path, fake_terraform: Path, aws_env: LocalAws
) -> None:
    from tests.conftest import fake_terraform_behaviour

    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1})
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  staging:\n    power: on\n"
        f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n"
    )
    first = cli("run", "--once", "--output", "json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["environments"]["staging"]["power"] == "STARTING"

    def run_files() -> list[Path]:
        return list((tmp_path / ".infra-controller-runs").glob("*.json"))

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        run_files() and json.loads(run_files()[0].read_text()).get("state") == "SUCCEEDED"
    ):
        time.sleep(0.1)
    second = cli("run", "--once", "--output", "json", cwd=tmp_path)
    assert json.loads(second.stdout)["environments"]["staging"]["power"] == "RUNNING"
    applies = [
        line
        for line in (fake_terraform / "invocations.log").read_text().splitlines()
        if '"apply"' in line
    ]
    assert len(applies) == 1


def test_sigterm_during_the_first_git_fetch_exits_0(tmp_path: Path) -> None:
    with socket.socket() as silent:  # a git server that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        url = f"git+http://127.0.0.1:{silent.getsockname()[1]}/config.git"
        proc = _start_daemon(tmp_path, free_port(), "--desired-state", url)
        try:
            connection, _ = silent.accept()  # the first fetch has started and now waits
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            connection.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_validate_takes_several_files_and_standard_input(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nenvironments:\n  a: {power: on}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nenvironments:\n  a: {power: maybe}\n")
    both = cli("validate", str(good), str(bad), cwd=tmp_path)
    assert both.returncode == 2
    assert both.stdout == f"{good}: valid (1 environment)\n"
    assert both.stderr.startswith(f"{bad}:3:")
    piped = subprocess.run(
        [sys.executable, "-m", "controller", "validate", "-"],
        input=good.read_text(),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (piped.returncode, piped.stdout) == (0, "<stdin>: valid (1 environment)\n")
    small = cli(
        "validate", str(good), cwd=tmp_path, env={"CONTROLLER_MAX_DESIRED_STATE_BYTES": "10"}
    )
    assert small.returncode == 2
    assert "larger than the limit" in small.stderr
