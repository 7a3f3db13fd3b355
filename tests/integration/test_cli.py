"""The command line as a user runs it: real subprocesses, exit codes, output and logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.core.aws import AwsClients
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import LocalAws, free_port
from tests.conftest import REGION
from tests.processes import (
    ROOT,
    interrupt_and_read_logs,
    start_daemon,
    start_sandbox,
    wait_for_http,
)

pytestmark = pytest.mark.integration


def cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    unset: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`infra-controller ARGS`; `unset`: variables of this process it does not inherit."""
    inherited = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=cwd,
        env={**inherited, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_logs(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be one JSON object."""
    return [json.loads(line) for line in stderr.splitlines()]


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
        f"{bad}:5:5: environments.a.colour: unknown key 'colour'; allowed: power, region, "
        "suspend, schedule, terraform, service, idle, cost",
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


def test_run_and_plan_print_each_problem_of_an_invalid_file_once_and_exit_2(
    tmp_path: Path, aws_env: LocalAws
) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  a: {power: x}\n  b: {power: y}\n"
    )
    daemon = ("run", "--http-addr", f"127.0.0.1:{free_port()}")
    for args in (("run", "--once"), ("plan",), ("plan", "--output", "json"), daemon):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        # as FILE:LINE:COLUMN only, not also as a log line carrying the same problem
        assert result.stderr.splitlines() == [
            "desired_state.yaml:3:14: environments.a.power: Input should be 'on' or 'off'",
            "desired_state.yaml:4:14: environments.b.power: Input should be 'on' or 'off'",
        ], args
        assert result.stdout == ""


def test_an_invalid_setting_names_its_flag_and_variable_in_plain_words(
    tmp_path: Path,
) -> None:
    expected = (
        "infra-controller: invalid setting interval: invalid duration '5': expected a number "
        "of hours, minutes and/or seconds such as 90s, 5m or 1h30m "
        "(--interval / CONTROLLER_INTERVAL)\n"
    )
    by_flag = cli("plan", "--interval", "5", cwd=tmp_path)
    by_variable = cli("run", "--once", cwd=tmp_path, env={"CONTROLLER_INTERVAL": "5"})
    for result in (by_flag, by_variable):
        assert (result.returncode, result.stderr, result.stdout) == (2, expected, "")
    without_flag = cli("validate", cwd=tmp_path, env={"CONTROLLER_INTERVAL": "5"})
    assert without_flag.returncode == 2
    assert without_flag.stderr.endswith("or 1h30m (CONTROLLER_INTERVAL)\n")
    sandbox = cli("sandbox", "--http-addr", "nowhere", "--workdir", str(tmp_path), cwd=tmp_path)
    assert sandbox.returncode == 2
    assert sandbox.stderr == (
        "infra-controller: invalid setting http_addr: expected HOST:PORT, got 'nowhere' "
        "(--http-addr / CONTROLLER_HTTP_ADDR)\n"
    )


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
    (decision,) = decisions
    assert decision["environment"] == "demo"
    assert decision["action"] == "none"
    assert decision["revision"] == report["revision"]
    assert decision["reason"].startswith("awake for")  # the idle policy's
    # each policy's own action and reason only where they differ from the environment's
    assert "idle_action" not in decision
    assert "idle_reason" not in decision
    for key in [key for key in decision if key.endswith("_action") and key != "action"]:
        policy = key.removesuffix("_action")
        assert (decision[key], decision[f"{policy}_reason"]) != (
            decision["action"],
            decision["reason"],
        )


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


def test_daemon_serves_status_and_wake_and_exits_0_on_sigterm(
    tmp_path: Path, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    port = free_port()
    proc = start_daemon(tmp_path, port, env={"CONTROLLER_API_TOKEN": "tok"})
    try:
        wait_for_http(port, proc)
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
    proc = start_sandbox(tmp_path, port, tmp_path / "sandbox")
    try:
        wait_for_http(port, proc)
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
        logs = interrupt_and_read_logs(proc)
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
    proc = start_sandbox(tmp_path, port, workdir)

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
        wait_for_http(port, proc)
        wait_for("RUNNING")
        stack = workdir / "infra" / "sandbox-stack.json"  # the stand-in re-reads it every run
        stack.write_text(json.dumps({**json.loads(stack.read_text()), "seconds": 1}))
        desired = workdir / "desired_state.yaml"
        desired.write_text(desired.read_text().replace("    power: on", "    power: off"))
        wait_for("STOPPED")
        desired.write_text(desired.read_text().replace("    power: off", "    power: on"))
        wait_for("RUNNING")
        logs = interrupt_and_read_logs(proc)
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
        proc = start_daemon(tmp_path, free_port(), "--desired-state", url)
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


NO_REGION = ("AWS_REGION", "AWS_DEFAULT_REGION")
NOWHERE = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def test_plan_says_why_an_environment_was_not_reconciled(tmp_path: Path) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  staging:\n    power: on\n    service: {cluster: c, name: s}\n"
    )
    text = cli("plan", cwd=tmp_path, unset=NO_REGION, env=NOWHERE)
    assert text.returncode == 2
    assert text.stdout == (
        "! staging: none (not reconciled: no AWS region: set AWS_REGION or `region:` "
        "on the environment)\n"
    )
    as_json = cli("plan", "--output", "json", cwd=tmp_path, unset=NO_REGION, env=NOWHERE)
    staging = json.loads(as_json.stdout)["environments"]["staging"]
    assert (staging["result"], staging["reason"]) == ("error", "not reconciled")
    assert staging["error"] == "no AWS region: set AWS_REGION or `region:` on the environment"


def test_plan_says_when_there_are_no_aws_credentials(tmp_path: Path, aws_env: LocalAws) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  staging:\n    power: on\n"
        "    service: {cluster: c, name: s}\n    idle: {after: 5m}\n"
    )
    no_credentials = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )
    # the SDK would otherwise look for credentials at the instance metadata address
    env = {**NOWHERE, "AWS_EC2_METADATA_DISABLED": "true"}
    result = cli("plan", "--output", "json", cwd=tmp_path, unset=no_credentials, env=env)
    assert result.returncode == 2
    staging = json.loads(result.stdout)["environments"]["staging"]
    assert "Unable to locate credentials" in staging["error"]
    assert "Unable to locate credentials" in staging["reason"]


def test_a_one_shot_command_promises_no_retry(tmp_path: Path) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  staging: {power: on, service: {cluster: c, name: s}}\n"
    )
    result = cli("run", "--once", cwd=tmp_path, unset=NO_REGION, env=NOWHERE)
    assert result.returncode == 1
    (failed,) = [line for line in json_logs(result.stderr) if line["event"] == "environment failed"]
    assert failed["error"].startswith("no AWS region")
    assert "retry_in" not in failed


def test_one_shot_commands_name_the_aws_endpoint_and_fail_fast_when_it_is_unreachable(
    tmp_path: Path, aws_env: LocalAws
) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  staging:\n    power: on\n"
        "    service: {cluster: c, name: s}\n    idle: {after: 5m}\n"
    )
    closed = f"http://127.0.0.1:{free_port()}"
    for args, code in ((("plan",), 2), (("run", "--once"), 1)):
        result = cli(*args, cwd=tmp_path, env={"AWS_ENDPOINT_URL": closed})
        assert result.returncode == code, result.stderr
        logs = json_logs(result.stderr)
        events = [line["event"] for line in logs]
        # said before the pass looks, so a person waiting knows what is being tried
        assert events.index("observing AWS") < events.index("decision")
        (observing,) = [line for line in logs if line["event"] == "observing AWS"]
        assert (observing["regions"], observing["endpoint"]) == ([REGION], closed)
        (decision,) = [line for line in logs if line["event"] == "decision"]
        assert f'Could not connect to the endpoint URL: "{closed}/"' in decision["reason"]


def _status_body(port: int) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def _poll_status(port: int, condition: Any, limit: float = 30) -> dict[str, Any]:
    """The first `/status` body that meets `condition` (a pass or a reload has happened)."""
    deadline = time.monotonic() + limit
    while not condition(body := _status_body(port)):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


def _columns(line: str) -> list[str]:
    """The cells of a table row: columns are at least two spaces apart."""
    return re.split(r"\s{2,}", line.strip())


def test_status_prints_a_table_and_the_desired_state_errors(
    tmp_path: Path, stack: DemoStack
) -> None:
    desired_state = tmp_path / "desired_state.yaml"
    desired_state.write_text(
        desired(stack)
        + f"  gone:\n    power: on\n    service: {{cluster: {stack.cluster}, name: missing}}\n"
        "    idle: {after: 5m}\n"
        "  broken:\n    power: on\n    service: {cluster: no-such-cluster, name: s}\n"
        "    idle: {after: 5m}\n"
        "  plain: {power: off}\n"
    )
    # the service woke long ago: the first pass scales it to zero
    (tmp_path / ".controller-state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "environments": {"demo": {"idle": {"awake_since": "2020-01-01T00:00:00+00:00"}}},
            }
        )
    )
    port = free_port()
    proc = start_daemon(tmp_path, port)
    try:
        wait_for_http(port, proc)
        first = _poll_status(port, lambda body: body["environments"]["demo"]["last_action"])
        url = f"127.0.0.1:{port}"
        valid = cli("status", "--url", url, cwd=tmp_path)
        desired_state.write_text("version: 1\nenvironments:\n  demo: {power: maybe}\n")
        second = _poll_status(port, lambda body: not body["desired_state_valid"])
        invalid = cli("status", "--url", url, cwd=tmp_path)
        no_token = cli("suspend", "demo", "--url", url, "--token", "t", cwd=tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert valid.returncode == 0, valid.stderr
    header, blank, titles, *rows, failure = valid.stdout.splitlines()
    assert header == f"desired state {first['revision']} from desired_state.yaml"
    assert blank == ""
    assert _columns(titles) == [
        "ENVIRONMENT",
        "POWER",
        "SERVICE",
        "LAST REQUEST",
        "LAST ACTION",
        "NEXT CHANGE",
    ]
    table = {cells[0]: cells[1:] for cells in map(_columns, rows)}
    assert table["broken"][:4] == ["unknown", "unknown", "-", "-"]
    assert re.fullmatch(r"retry at \d\d:\d\d:\d\d", table["broken"][4])
    power, service, last_request, last_action, next_change = table["demo"]
    assert (power, service, next_change) == ("RUNNING", "0/0", "-")
    assert re.fullmatch(r"\d+[smhd] ago", last_request)
    assert re.fullmatch(r"scale_to_zero \d+s ago", last_action)
    assert table["gone"][1:] == ["absent", "-", "-", "-"]
    assert table["plain"] == ["STOPPED", "-", "-", "-", "-"]
    assert failure.startswith("! broken: service state unknown (ecs DescribeServices failed: ")
    assert invalid.returncode == 0, invalid.stderr
    assert invalid.stdout.splitlines()[:2] == [
        f"desired state INVALID ({second['attempted_revision']} from desired_state.yaml): "
        f"keeping {first['revision']}",
        "  desired_state.yaml:3:17: environments.demo.power: Input should be 'on' or 'off'",
    ]
    assert no_token.returncode == 2
    assert no_token.stdout == ""
    assert "refused (403)" in no_token.stderr


def test_remote_commands_suspend_resume_and_print_only_json_with_output_json(
    tmp_path: Path, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        desired(stack) + "  frozen: {power: off, suspend: true}\n"
    )
    (tmp_path / ".controller-state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "environments": {"demo": {"idle": {"awake_since": "2020-01-01T00:00:00+00:00"}}},
            }
        )
    )
    port = free_port()
    token = {"CONTROLLER_API_TOKEN": "tok"}
    proc = start_daemon(tmp_path, port, "--dry-run", env=token)
    url = f"127.0.0.1:{port}"

    def remote(*args: str, token: dict[str, str] = token) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--url", url, cwd=tmp_path, env=token)

    def answer(*args: str) -> Any:
        result = remote(*args, "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # the whole of stdout: one JSON document

    try:
        wait_for_http(port, proc)
        _poll_status(port, lambda body: body["environments"]["demo"]["last_decision"])
        assert "demo" in answer("status")["environments"]
        table = remote("status").stdout.splitlines()
        assert table[0].endswith("(dry run: nothing is changed)")
        (demo,) = [_columns(line) for line in table if line.startswith("demo ")]
        assert demo[-1] == "scale_to_zero (dry run)"
        assert answer("wake", "demo") == {
            "accepted": True,
            "environment": "demo",
            "message": "waking demo",
        }
        assert answer("reconcile")["accepted"] is True
        assert answer("reconcile", "demo")["environment"] == "demo"
        suspended = answer("suspend", "demo", "--reason", "load test next door")
        assert (suspended["accepted"], suspended["suspended"]) == (True, True)
        in_force = _poll_status(port, lambda body: body["environments"]["demo"]["suspended"])
        assert in_force["environments"]["demo"]["suspended"]["reason"] == "load test next door"
        (demo,) = [
            _columns(line)
            for line in remote("status").stdout.splitlines()
            if line.startswith("demo ")
        ]
        assert demo[:2] == ["demo", "RUNNING (suspended)"]
        resumed = answer("resume", "demo")
        assert (resumed["environment"], resumed["suspended"]) == ("demo", False)
        assert remote("resume", "demo").stdout == "demo was not suspended\n"
        assert remote("suspend", "demo").stdout.startswith("demo: suspended")
        assert remote("resume", "demo").stdout == "demo resumed\n"
        powered = answer("power", "demo", "off", "--for", "2h", "--reason", "demo day")
        assert (powered["accepted"], powered["power"], powered["reason"]) == (
            True,
            "off",
            "demo day",
        )
        overridden = _poll_status(port, lambda body: body["environments"]["demo"]["override"])
        assert overridden["environments"]["demo"]["power_source"] == "override"
        assert remote("power", "demo", "--clear").stdout.startswith("demo: power override cleared")
        assert remote("power", "demo").returncode == 2  # neither on, off nor --clear
        refusals = {
            "409": remote("resume", "frozen", "--output", "json"),  # the YAML's suspend wins
            "404": remote("suspend", "nope", "--output", "json"),
            "401": remote(
                "suspend", "demo", "--output", "json", token={"CONTROLLER_API_TOKEN": "x"}
            ),
        }
    finally:
        proc.kill()
        proc.wait()
    for status, refused in refusals.items():
        assert refused.returncode == 2, status
        assert refused.stdout == ""
        assert f"refused ({status})" in refused.stderr
    assert "suspend: true" in refusals["409"].stderr
    closed = f"127.0.0.1:{port}"  # nobody listens there any more
    for command in (
        ("suspend", "demo"),
        ("resume", "demo"),
        ("status",),
        ("wake", "demo"),
        ("power", "demo", "on"),
    ):
        unreachable = cli(*command, "--url", closed, "--output", "json", cwd=tmp_path)
        assert (unreachable.returncode, unreachable.stdout) == (2, "")
        assert "cannot reach" in unreachable.stderr


def test_completion_prints_a_bash_script_bash_accepts_and_a_zsh_script(tmp_path: Path) -> None:
    bash = cli("completion", "bash", cwd=tmp_path)
    assert bash.returncode == 0, bash.stderr
    script = tmp_path / "infra-controller.bash"
    script.write_text(bash.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    for command in ("run", "plan", "validate", "status", "wake", "suspend", "resume", "sandbox"):
        assert re.search(rf"_subparsers=\(.*\b{command}\b", bash.stdout), command
    # what bash offers for `infra-controller su<TAB>`
    offered = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{script}"; COMP_WORDS=(infra-controller su); COMP_CWORD=1; '
            'COMP_LINE="infra-controller su"; COMP_POINT=${#COMP_LINE}; '
            '_shtab_infra_controller infra-controller su infra-controller; echo "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert offered.stdout.split() == ["suspend"]
    zsh = cli("completion", "zsh", cwd=tmp_path)
    assert zsh.returncode == 0, zsh.stderr
    assert zsh.stdout.startswith("#compdef infra-controller")
    assert "suspend" in zsh.stdout
    assert cli("completion", "fish", cwd=tmp_path).returncode == 2
