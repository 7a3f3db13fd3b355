"""The desired state from git: real repositories, served over file:// and over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from controller.core.aws import AwsClients
from controller.desired.git_source import GitCredentials, GitSource, parse_git_location
from controller.desired.source import SourceUnavailable
from controller.engine.passes import PassRequest
from controller.http_api import bound_port, start_http_server
from controller.sandbox.demo_stack import create_demo_stack
from tests.conftest import REGION, Harness, MakeController
from tests.git_helpers import GitHttpServer, Repo, git
from tests.waiting import until

pytestmark = pytest.mark.integration

ONE = "version: 1\nenvironments:\n  a:\n    power: off\n    region: eu-west-3\n"
TWO = ONE + "  b:\n    power: on\n    region: eu-west-3\n"
BAD = "version: 1\nenvironments:\n  a:\n    power: off\n    regoin: eu-west-3\n"


def source_for(url: str, token: str | None = None) -> GitSource:
    return GitSource(parse_git_location(url), GitCredentials(token=token), timeout=30)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "origin")


async def test_each_commit_changes_what_the_controller_acts_on(
    make_controller: MakeController, repo: Repo
) -> None:
    first = repo.commit({"desired_state.yaml": ONE})
    h: Harness = make_controller(ONE, source=source_for(repo.file_url))
    report = await h.controller.reconcile_once()
    assert report.revision == first
    assert set(report.results) == {"a"}
    second = repo.commit({"desired_state.yaml": TWO})
    report = await h.controller.reconcile_once()
    assert report.revision == second
    assert set(report.results) == {"a", "b"}
    status = h.status()
    assert (status["revision"], status["attempted_revision"]) == (second, second)
    metrics = [
        s
        for m in h.controller.metrics.registry.collect()
        for s in m.samples
        if s.name == "infra_controller_desired_state_info"
    ]
    assert [(s.labels["revision"], s.value) for s in metrics] == [(second, 1.0)]


async def test_branch_and_path_select_the_file(make_controller: MakeController, repo: Repo) -> None:
    repo.commit({"desired_state.yaml": ONE})
    wanted = repo.commit({"envs/prod.yaml": TWO}, branch="prod")
    url = f"{repo.file_url}#branch=prod&path=envs/prod.yaml"
    h: Harness = make_controller(ONE, source=source_for(url))
    report = await h.controller.reconcile_once()
    assert (report.revision, set(report.results)) == (wanted, {"a", "b"})


async def test_a_bad_commit_changes_nothing_and_is_reported_once(
    make_controller: MakeController, repo: Repo, seed_aws: AwsClients, logs: io.StringIO
) -> None:
    (stack,) = await create_demo_stack(seed_aws, REGION)
    good_text = (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, active_count: 1}\n"
    )
    good = repo.commit({"desired_state.yaml": good_text})
    h: Harness = make_controller(good_text, source=source_for(repo.file_url))
    await h.controller.reconcile_once()
    # the bad commit would suspend the environment, but a typo makes it invalid: nothing changes
    bad = repo.commit(
        {"desired_state.yaml": good_text.replace("idle:", "suspend: true\n    idel:")}
    )
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert not report.desired_state_valid
    assert report.revision == good
    assert (
        report.decision("demo", "idle").action == "scale_to_zero"
    )  # the last good state still acts
    status = h.status()
    assert status["attempted_revision"] == bad
    assert status["desired_state_errors"] == [
        "desired_state.yaml:7:5: environments.demo.idel: unknown key 'idel' "
        "(did you mean 'idle'?); allowed: power, region, suspend, schedule, terraform, service, "
        "idle, cost"
    ]
    await h.controller.reconcile_once()  # the same bad revision: not reported again
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    invalid = [line for line in lines if line["event"] == "desired state invalid"]
    assert len(invalid) == 1
    assert invalid[0]["attempted_revision"] == bad
    assert invalid[0]["revision"] == good
    fixed = repo.commit(
        {"desired_state.yaml": good_text.replace("active_count: 1", "active_count: 2")}
    )
    report = await h.controller.reconcile_once()
    assert report.desired_state_valid
    assert report.revision == fixed


async def test_a_missing_file_in_the_commit_is_an_invalid_revision(
    make_controller: MakeController, repo: Repo
) -> None:
    repo.commit({"other.yaml": ONE})
    h: Harness = make_controller(ONE, source=source_for(repo.file_url))
    report = await h.controller.reconcile_once()
    assert not report.desired_state_valid
    assert "not found in commit" in h.status()["desired_state_errors"][0]


async def test_unreachable_remote_keeps_the_last_good_state_and_backs_off(
    make_controller: MakeController, repo: Repo, tmp_path: Path
) -> None:
    good = repo.commit({"desired_state.yaml": ONE})
    h: Harness = make_controller(ONE, source=source_for(repo.file_url))
    await h.controller.reconcile_once()
    shutil.move(repo.path, tmp_path / "gone")
    report = await h.controller.reconcile_once()
    assert report.revision == good
    assert set(report.results) == {"a"}
    status = h.status()
    assert status["source_error"].startswith("git fetch from git+file://")
    assert status["desired_state_valid"] is True
    fetches = "infra_controller_desired_state_fetches_total"
    errors = h.metric(fetches, outcome="error")
    await h.controller.reconcile_once()  # within the backoff: no fetch attempted
    assert h.metric(fetches, outcome="error") == errors
    # a webhook or POST /reconcile tries at once
    await h.controller.reconcile_once(PassRequest(fetch_now=True))
    assert h.metric(fetches, outcome="error") == errors + 1
    shutil.move(tmp_path / "gone", repo.path)
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    assert h.status()["source_error"] is None


@pytest.fixture
def http_repo(tmp_path: Path) -> Iterator[tuple[Repo, GitHttpServer]]:
    repo = Repo(tmp_path / "srv" / "work")
    server = GitHttpServer(tmp_path / "srv", token="tok-4bc1d2")
    yield repo, server
    server.close()


def publish(repo: Repo) -> None:
    """Mirror the working repository as the bare one the HTTP server serves."""
    bare = repo.path.parent / "config.git"
    if not bare.exists():
        git(repo.path.parent, "clone", "--quiet", "--bare", str(repo.path), str(bare))
    else:
        git(repo.path, "push", "--quiet", "--force", str(bare), "HEAD:main")


async def test_https_style_token_fetches_and_never_leaks(
    make_controller: MakeController, http_repo: tuple[Repo, GitHttpServer], logs: io.StringIO
) -> None:
    repo, server = http_repo
    commit = repo.commit({"desired_state.yaml": ONE})
    publish(repo)
    good = source_for(server.url("config.git"), token="tok-4bc1d2")
    assert (await good.fetch()).revision == commit
    good.close()
    for url, token in (
        (server.url("config.git"), "wrong-token-9f"),
        (
            server.url("config.git").replace("http://", "http://x-access-token:wrong-token-9f@"),
            None,
        ),
    ):
        bad = source_for(url, token=token)
        h: Harness = make_controller(ONE, source=bad)
        await h.controller.reconcile_once()
        status = json.dumps(h.status())
        assert h.status()["source_error"]
        with pytest.raises(SourceUnavailable) as caught:
            await bad.fetch()
        bad.close()
        for text in (status, str(caught.value), logs.getvalue(), bad.description):
            assert "wrong-token-9f" not in text
            assert "eC1hY2Nlc3MtdG9rZW46d3JvbmctdG9rZW4tOWY" not in text  # its base64 form


async def test_webhook_fetches_the_new_commit_at_once(
    make_controller: MakeController, repo: Repo
) -> None:
    repo.commit({"desired_state.yaml": ONE})
    h: Harness = make_controller(ONE, source=source_for(repo.file_url), webhook_secret="s")
    runner = await start_http_server(h.controller, "127.0.0.1", 0)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(h.controller.run(stop))
    try:
        await until(lambda: h.controller.snapshot().passes_completed >= 1)
        pushed = repo.commit({"desired_state.yaml": TWO})
        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{bound_port(runner)}/hooks/git",
                data=body,
                headers={"X-Hub-Signature-256": signature},
            ) as response,
        ):
            assert response.status == 202
        # the clock never moves: only the webhook can have started this pass
        await until(lambda: h.controller.snapshot().revision == pushed)
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 10)
        await runner.cleanup()


async def test_a_local_file_change_reconciles_without_waiting_for_the_interval(
    make_controller: MakeController,
) -> None:
    h: Harness = make_controller(ONE)
    assert h.status()["source"] == str(h.desired_path)  # a file source, watched
    stop = asyncio.Event()
    loop_task = asyncio.create_task(h.controller.run(stop))
    try:
        await until(lambda: h.controller.snapshot().passes_completed >= 1)
        h.write(TWO)
        # the clock never moves: the watcher (polling every 0.5 s) triggers the pass
        await until(lambda: h.controller.knows("b"), limit=5)
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 10)


async def test_a_password_in_the_url_authenticates_but_never_reaches_a_command_line(
    http_repo: tuple[Repo, GitHttpServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, server = http_repo
    commit = repo.commit({"desired_state.yaml": ONE})
    publish(repo)
    spy = tmp_path / "spy"  # a git that writes down its command line, then runs the real one
    spy.mkdir()
    real_git = shutil.which("git")
    assert real_git is not None
    (spy / "git").write_text(f'#!/bin/sh\necho "$@" >> {spy / "argv.log"}\nexec {real_git} "$@"\n')
    (spy / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}{os.pathsep}{os.environ['PATH']}")
    url = server.url("config.git").replace("http://", "http://x-access-token:tok-4bc1d2@")
    source = source_for(url)
    try:
        assert (await source.fetch()).revision == commit  # the password still authenticates
    finally:
        source.close()
    command_lines = (spy / "argv.log").read_text()
    assert "fetch" in command_lines
    assert "tok-4bc1d2" not in command_lines
    assert "x-access-token" not in command_lines
