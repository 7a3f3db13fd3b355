"""The sandbox's stand-in for the demo ALB, against the emulator: it routes as the listener is
configured there (rules by priority, host and path conditions, weights, the default action),
forwards to a healthy target and counts each request as an ALB would. Then the whole story in
a real `sandbox` process, through curl: the demo service answers, falls asleep, a request gets
the activator's waiting page and wakes it, and the service answers again."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.core.aws import AwsClients
from controller.http_api import bound_port
from controller.sandbox.alb import (
    ListenerConfig,
    ListenerReader,
    LoadBalancer,
    Rule,
    forward_target_group,
    request_host,
    routing_action,
    start_load_balancer,
)
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.emulator import free_port
from tests.alb import Alb
from tests.conftest import REGION
from tests.integration.test_sandbox import Sandbox, sandboxes
from tests.waiting import until

pytestmark = pytest.mark.integration
__all__ = ["sandboxes"]  # the fixture, shared with test_sandbox


async def add_rule(
    aws: AwsClients, alb: Alb, priority: int, conditions: list[dict[str, Any]], groups: list[Any]
) -> None:
    forward = {"TargetGroups": [{"TargetGroupArn": g, "Weight": w} for g, w in groups]}
    await aws.call(
        "elbv2",
        "CreateRule",
        REGION,
        ListenerArn=alb.listener,
        Priority=priority,
        Conditions=conditions,
        Actions=[{"Type": "forward", "ForwardConfig": forward}],
    )


async def set_default(aws: AwsClients, alb: Alb, group: str) -> None:
    await aws.call(
        "elbv2",
        "ModifyListener",
        REGION,
        ListenerArn=alb.listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )


async def test_the_stand_in_picks_the_target_group_an_alb_would(
    seed_aws: AwsClients, alb: Alb
) -> None:
    # besides the fixture's host rule (10: App.Example.com -> service) and shared rule
    # (20: /shared/* -> service 50, other 50): both conditions of one rule (5), a weight 0
    # (30), and a rule that matches wherever 5 does (40)
    await add_rule(
        seed_aws,
        alb,
        5,
        [
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["*.example.org"]}},
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}},
        ],
        [(alb.activator_group, 1)],
    )
    await add_rule(
        seed_aws,
        alb,
        30,
        [{"Field": "path-pattern", "Values": ["/w/*"]}],
        [(alb.other_group, 0), (alb.activator_group, 3)],
    )
    await add_rule(
        seed_aws,
        alb,
        40,
        [{"Field": "path-pattern", "Values": ["/api/*"]}],
        [(alb.service_group, 1)],
    )
    await set_default(seed_aws, alb, alb.other_group)
    clock = [0.0]
    reader = ListenerReader(seed_aws, REGION, "demo-alb", monotonic=lambda: clock[0])
    config = await reader.config()
    assert config is not None
    rng = random.Random(3)
    names = {
        alb.service_group: "service",
        alb.activator_group: "activator",
        alb.other_group: "other",
    }

    def pick(config: ListenerConfig, host: str, path: str) -> str:
        action = routing_action(config, host, path)
        assert action is not None
        group = forward_target_group(action, rng)
        return names[group] if group else "none"

    assert pick(config, "app.example.com", "/x") == "service"  # host rule, any case
    assert pick(config, "www.example.org", "/api/v1") == "activator"  # 5 before 40
    assert pick(config, "localhost", "/api/v1") == "service"  # only 40: one condition of 5
    assert pick(config, "www.example.org", "/") == "other"  # no rule: the default action
    assert pick(config, "app.example.com", "/w/1") == "service"  # 10 before 30
    assert pick(config, "localhost", "/Shared/a") == "other"  # paths are case-sensitive
    assert {pick(config, "localhost", "/w/1") for _ in range(50)} == {"activator"}
    assert {pick(config, "localhost", "/shared/a") for _ in range(200)} == {"service", "other"}

    # a change shows once the copy is a second old, or at once when a request found no target
    await set_default(seed_aws, alb, alb.activator_group)
    clock[0] += 0.1
    config = await reader.config()
    assert config is not None and pick(config, "localhost", "/") == "other"
    config = await reader.config(refresh=True)
    assert config is not None and pick(config, "localhost", "/") == "activator"
    await set_default(seed_aws, alb, alb.other_group)
    clock[0] += 0.9
    config = await reader.config()
    assert config is not None and pick(config, "localhost", "/") == "activator"
    clock[0] += 0.1
    config = await reader.config()
    assert config is not None and pick(config, "localhost", "/") == "other"


def test_a_host_header_is_matched_without_its_port() -> None:
    assert request_host("localhost:8000") == "localhost"
    assert request_host("App.Example.com") == "App.Example.com"
    assert request_host("[::1]:8000") == "::1"


async def echo(request: web.Request) -> web.Response:
    """A target that says what reached it."""
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "host": request.headers.get("Host"),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "body": (await request.read()).decode(),
        },
        headers={"Set-Cookie": "a=1"},
    )


@pytest.fixture
async def balancer(seed_aws: AwsClients, stack: DemoStack) -> AsyncIterator[str]:
    """The stand-in for the demo ALB on 127.0.0.1, reading its configuration on every request."""
    lb = LoadBalancer(seed_aws, REGION, ListenerReader(seed_aws, REGION, "demo-alb", ttl=0))
    runner = await start_load_balancer(lb, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()
    await lb.close()


async def counted(aws: AwsClients, stack: DemoStack, metric: str) -> float:
    dimensions = [{"Name": "LoadBalancer", "Value": stack.load_balancer}]
    if metric == "RequestCount":
        dimensions.append({"Name": "TargetGroup", "Value": stack.target_group})
    now = datetime.now(UTC)
    answer = await aws.call(
        "cloudwatch",
        "GetMetricStatistics",
        REGION,
        Namespace="AWS/ApplicationELB",
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum"],
    )
    return float(sum(point["Sum"] for point in answer["Datapoints"]))


async def test_the_stand_in_forwards_to_a_healthy_target_and_counts_like_an_alb(
    seed_aws: AwsClients, stack: DemoStack, alb: Alb, balancer: str
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    target = web.AppRunner(app)
    await target.setup()
    await web.TCPSite(target, "127.0.0.1", 0).start()
    port = bound_port(target)

    async def targets(action: str, port: int) -> None:
        await seed_aws.call(
            "elbv2",
            action,
            REGION,
            TargetGroupArn=alb.service_group,
            Targets=[{"Id": "127.0.0.1", "Port": port}],
        )

    try:
        async with aiohttp.ClientSession() as session:
            assert await counted(seed_aws, stack, "RequestCount") == 0
            async with session.get(balancer + "/") as r:  # no task registered yet
                assert r.status == 503
                assert "<title>503 Service Temporarily Unavailable</title>" in await r.text()
            assert await counted(seed_aws, stack, "HTTPCode_ELB_503_Count") == 1

            await targets("RegisterTargets", port)
            headers = {"Host": "App.Example.com:8000", "X-Forwarded-For": "198.51.100.7"}
            async with session.post(balancer + "/a/b?c=1", data=b"hi", headers=headers) as r:
                assert r.status == 200
                assert r.headers["Set-Cookie"] == "a=1"
                seen = await r.json()
            assert seen == {
                "method": "POST",
                "path": "/a/b?c=1",
                "host": "App.Example.com:8000",  # as sent: the target sees the visitor's host
                "forwarded_for": "198.51.100.7, 127.0.0.1",
                "body": "hi",
            }
            assert await counted(seed_aws, stack, "RequestCount") == 1
            assert await counted(seed_aws, stack, "HTTPCode_ELB_503_Count") == 1

            await targets("DeregisterTargets", port)
            await targets("RegisterTargets", free_port())  # a task that does not listen
            async with session.get(balancer + "/") as r:
                assert r.status == 502
    finally:
        await target.cleanup()


# ---- the whole story in a sandbox process ----


def curl(url: str) -> tuple[int, dict[str, str], str]:
    """What `curl -i URL` shows: the status, the headers, the body."""
    shown = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    head, _, body = shown.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body


def traffic_to(api: str) -> str | None:
    with urllib.request.urlopen(f"{api}/status", timeout=5) as answer:
        status = json.load(answer)
    demo = status["environments"].get("demo") or {}
    return (demo.get("traffic") or {}).get("to")


async def test_the_sandbox_demo_answers_sleeps_shows_the_waiting_page_and_answers_again(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    with socket.socket() as busy:  # the port asked for is taken: the stand-in takes another
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        args = ("--http-addr", api.removeprefix("http://"), "--alb-addr", taken)
        sandbox = Sandbox(tmp_path, *args, "--idle-after", "5s", "--log-format", "json")
        sandboxes.append(sandbox)
        lines = await sandbox.ready()
    (moved,) = [line for line in sandbox.stderr.splitlines() if not line.startswith("{")]
    assert moved.startswith(f"infra-controller: cannot listen on {taken} ")
    (said,) = [line for line in lines if "load balancer: open " in line]
    alb = said.split("load balancer: open ", 1)[1].split()[0]
    assert alb != f"http://{taken}/" and alb.endswith("/")
    assert alb.removesuffix("/").rpartition(":")[2] in moved

    status, _, body = await asyncio.to_thread(curl, alb)
    assert (status, body) == (200, "hello from the demo service\n")

    def asleep() -> bool:
        assert sandbox.proc.poll() is None, sandbox.stderr
        return traffic_to(api) == "activator"

    await until(asleep, limit=60)
    # the app may serve a last request while its task stops, as on ECS
    status, headers, body = await asyncio.to_thread(curl, alb)
    async with asyncio.timeout(5):
        while status == 200:
            status, headers, body = await asyncio.to_thread(curl, alb)
    assert status == 503
    assert "<title>demo is waking up</title>" in body
    assert int(headers["retry-after"]) >= 1

    waited: list[str] = []

    async def answered() -> bool:
        status, _, body = await asyncio.to_thread(curl, alb)
        if status == 200:
            return body == "hello from the demo service\n"
        waited.append(f"{status} {body.partition('<title>')[2].partition('</title>')[0]}")
        return False

    async with asyncio.timeout(30):
        # each try is a request through the stand-in: the page a visitor reloads
        while not await answered():  # noqa: ASYNC110
            await asyncio.sleep(1)
    # the activator answered until the service served: never the load balancer's bare 503
    assert set(waited) <= {"503 demo is waking up", "429 Too many requests"}, waited
    assert await asyncio.to_thread(sandbox.interrupt) == 0
    events = [json.loads(line) for line in sandbox.stderr.splitlines() if line.startswith("{")]
    woken = [e for e in events if e.get("event") == "wake completed"]
    assert woken and woken[0]["source"] == "activator"


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--idle-after", "0s", "--idle-after: must be longer than 0s"),
        ("--idle-after", "soon", "--idle-after: invalid duration 'soon'"),
        ("--alb-addr", "8000", "--alb-addr: expected HOST:PORT, got '8000'"),
    ],
)
def test_an_invalid_sandbox_flag_is_one_line_and_exit_2(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    sandbox = Sandbox(tmp_path, "--http-addr", f"127.0.0.1:{free_port()}", flag, value)
    try:
        assert sandbox.proc.wait(timeout=60) == 2
    finally:
        sandbox.kill()
    (line,) = sandbox.stderr.splitlines()
    assert line.startswith(f"infra-controller: {says}")
    assert sandbox.left_in_temp() == []


def test_a_rule_with_a_condition_the_stand_in_does_not_evaluate_never_matches() -> None:
    service = {"Type": "forward", "TargetGroupArn": "service"}
    header = {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Beta"}}
    path = {"Field": "path-pattern", "Values": ["/*"]}
    config = ListenerConfig(
        load_balancer="app/demo-alb/1",
        port=80,
        rules=(
            Rule(1, (path, header), ({"Type": "forward", "TargetGroupArn": "beta"},)),
            Rule(2, (path,), ({"Type": "fixed-response"}, {**service, "Order": 2})),
        ),
        default_actions=({"Type": "forward", "TargetGroupArn": "default"},),
    )
    # rule 1 is passed over; rule 2's last action by Order is the one that routes
    assert routing_action(config, "localhost", "/x") == {**service, "Order": 2}
