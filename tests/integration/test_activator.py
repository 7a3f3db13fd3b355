"""The activator through real HTTP: a request for a sleeping environment wakes it at once (one
UpdateService however many requests), every visitor gets a waiting page, an unknown host wakes
nothing, and the wake is timed from its first request to a healthy target."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controller.activator_server import activator_running, start_activator
from controller.core.aws import AwsClients
from controller.engine.passes import RETRY_EVERYTHING
from controller.http_api import bound_port
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.emulator import free_port
from tests.alb import Alb, activator_settings, forwards
from tests.conftest import REGION, Harness, MakeController, desired_count
from tests.fault_proxy import Fault, FaultProxy
from tests.processes import interrupt_and_read_logs, start_daemon, wait_for_http
from tests.waiting import until

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, extra: str = "") -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"{extra}    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: on-request, hosts: [www.example.org]}\n"
    )


class Activator:
    def __init__(self, h: Harness, url: str, session: aiohttp.ClientSession) -> None:
        self.h, self.url, self.session = h, url, session

    async def get(
        self, host: str, accept: str = "text/html", client: str = "203.0.113.7"
    ) -> tuple[int, dict[str, str], str]:
        headers = {"Host": host, "Accept": accept, "X-Forwarded-For": client}
        async with self.session.get(self.url + "/some/page", headers=headers) as r:
            return r.status, dict(r.headers), await r.text()


@pytest.fixture
async def asleep(
    make_controller: MakeController, stack: DemoStack, alb: Alb
) -> AsyncIterator[Activator]:
    """The demo environment scaled to zero, its routes at the activator, which listens."""
    h = make_controller(desired(stack), **activator_settings(alb))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_activator"
    runner = await start_activator(h.controller, "127.0.0.1", 0)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Activator(h, f"http://127.0.0.1:{bound_port(runner)}", session)
    await runner.cleanup()


async def test_a_request_wakes_the_environment_at_once_and_gets_a_waiting_page(
    asleep: Activator, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = asleep.h
    status, headers, body = await asleep.get("app.example.com")  # the rule's host condition
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert headers["Cache-Control"] == "no-store"
    assert "<title>demo is waking up</title>" in body
    assert h.status()["environments"]["demo"]["traffic"]["to"] == "activator"
    assert 'http-equiv="refresh"' in body
    assert "http://" not in body and "https://" not in body  # no external assets
    await until(lambda: h.calls("UpdateService") == 2)  # the scale to zero, then the wake
    assert await desired_count(seed_aws, stack) == 1
    assert h.metric("infra_controller_wakes_total", environment="demo", source="activator") == 1
    assert h.metric("infra_controller_actions_total", environment="demo", action="scale_up") == 1


async def test_a_burst_of_requests_wakes_the_service_once(
    asleep: Activator, seed_aws: AwsClients
) -> None:
    answers = await asyncio.gather(
        *(asleep.get("www.example.org", client=f"198.51.100.{i % 250}") for i in range(1000))
    )
    assert {status for status, _, _ in answers} == {503}
    await until(lambda: asleep.h.calls("UpdateService") == 2)
    await asyncio.sleep(0)  # nothing more is on its way
    assert asleep.h.calls("UpdateService") == 2


async def test_json_is_answered_to_a_client_that_asks_for_it(asleep: Activator) -> None:
    status, headers, body = await asleep.get("www.example.org", accept="application/json")
    assert status == 503
    assert headers["Content-Type"].startswith("application/json")
    assert '"status": "waking"' in body and '"environment": "demo"' in body


async def test_an_unknown_host_gets_404_and_wakes_nothing(asleep: Activator) -> None:
    status, _, body = await asleep.get("not-ours.example.net")
    assert status == 404
    assert "No environment answers for not-ours.example.net" in body
    assert asleep.h.calls("UpdateService") == 1  # only the scale to zero


async def test_one_client_past_its_rate_gets_429(asleep: Activator) -> None:
    answers = [await asleep.get("not-ours.example.net", client="192.0.2.1") for _ in range(25)]
    assert [s for s, _, _ in answers].count(429) >= 4


async def test_a_suspended_environment_is_not_woken(
    make_controller: MakeController, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    await h.controller.reconcile_once()
    await h.controller.overrides.suspend("demo", "maintenance", wait=5)
    answer = h.controller.activator.request("demo", "www.example.org")
    assert (answer.waking, answer.reason) == (False, "the environment is suspended")
    assert h.calls("UpdateService") == 1


async def test_the_wake_is_timed_from_its_first_request_and_the_routes_come_back(
    asleep: Activator, seed_aws: AwsClients, alb: Alb
) -> None:
    h = asleep.h
    await asleep.get("app.example.com")
    await until(lambda: h.calls("UpdateService") == 2)
    h.clock.advance(timedelta(seconds=10))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").reason.startswith("waking: 1 running, 0 healthy")
    await seed_aws.call(
        "elbv2",
        "RegisterTargets",
        REGION,
        TargetGroupArn=alb.service_group,
        Targets=[{"Id": "10.0.1.10", "Port": 80}],
    )
    h.clock.advance(timedelta(seconds=25))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_service"
    assert (await forwards(seed_aws, alb))["default"] == {"service"}
    assert h.metric("infra_controller_wake_duration_seconds_sum", environment="demo") == 35
    # the next sleep announces what this wake took
    expected = h.controller.snapshot().environments["demo"].record.idle.wake_seconds
    assert expected == (35.0,)
    traffic = h.status()["environments"]["demo"]["traffic"]
    assert traffic == {
        "to": "service",
        "switched_routes": 0,
        "switched_at": None,
        "hosts": ["app.example.com", "www.example.org"],
        "wake_started_at": None,
        "wake_source": None,
        "expected_wake_seconds": 35,
    }


async def test_on_ecs_the_activator_registers_in_its_target_group_and_leaves_at_shutdown(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    metadata = web.Application()

    async def task(request: web.Request) -> web.Response:
        network = {"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.9.9"]}
        return web.json_response({"Containers": [{"Name": "controller", "Networks": [network]}]})

    metadata.router.add_get("/v4/abc/task", task)
    server = web.AppRunner(metadata)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = free_port()
    settings = activator_settings(alb) | {"activator_addr": f"127.0.0.1:{port}"}
    h = make_controller(desired(stack), **settings)

    async def targets() -> list[tuple[str, int]]:
        answer = await seed_aws.call(
            "elbv2", "DescribeTargetHealth", REGION, TargetGroupArn=alb.activator_group
        )
        return [
            (t["Target"]["Id"], t["Target"]["Port"])
            for t in answer["TargetHealthDescriptions"]
            if t["TargetHealth"]["State"] == "healthy"
        ]

    try:
        url = f"http://127.0.0.1:{bound_port(server)}/v4/abc"
        async with activator_running(h.controller, url) as runner:
            assert runner is not None and bound_port(runner) == port
            assert await targets() == [("10.0.9.9", port)]
        assert await targets() == []
    finally:
        await server.cleanup()


def test_the_daemon_serves_the_activator_on_its_own_port(
    tmp_path: Path, stack: DemoStack, alb: Alb
) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    port, activator = free_port(), free_port()
    env = {
        "CONTROLLER_ACTIVATOR_ADDR": f"127.0.0.1:{activator}",
        "CONTROLLER_ACTIVATOR_TARGET_GROUP": alb.activator_group,
    }
    proc = start_daemon(tmp_path, port, env=env)
    try:
        wait_for_http(port, proc)
        request = urllib.request.Request(
            f"http://127.0.0.1:{activator}/", headers={"Host": "unknown.example.net"}
        )

        def answer() -> int:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            return refused.value.code

        deadline = time.monotonic() + 30
        codes = [answer()]
        # 503 "starting" until the first pass has said which names are whose
        while codes[-1] == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
            codes.append(answer())
        assert set(codes[:-1]) <= {503} and codes[-1] == 404
    finally:
        logs = interrupt_and_read_logs(proc)
    assert any(line["event"] == "activator listening" for line in logs)


async def test_a_service_whose_state_is_unknown_is_never_scaled_by_a_request(
    make_controller: MakeController, stack: DemoStack, alb: Alb, proxy: FaultProxy
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    await h.controller.reconcile_once()  # asleep, routes at the activator
    proxy.set(Fault("html200", "DescribeServices"))
    await h.controller.reconcile_once()
    assert h.controller.snapshot().environments["demo"].facts.service is None
    answer = h.controller.activator.request("demo", "www.example.org")
    assert answer.waking  # the visitor still gets the page that reloads itself
    await asyncio.sleep(0.2)
    assert h.calls("UpdateService") == 1  # the scale to zero only: unknown is never acted on
    proxy.clear()
    await h.controller.reconcile_once(RETRY_EVERYTHING)  # past the failed pass's backoff
    h.controller.activator.request("demo", "www.example.org")  # known asleep now
    await until(lambda: h.calls("UpdateService") == 2)
