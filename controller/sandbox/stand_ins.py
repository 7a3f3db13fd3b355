"""What the emulator only records, played on 127.0.0.1 for the sandbox: the demo service (its
app, and its task coming and going with desiredCount) and its load balancer, with the activator
registered in its own target group as it registers itself on ECS."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web

from controller.core.aws import AwsClients
from controller.http_api import bound_port
from controller.sandbox.alb import ListenerReader, LoadBalancer, start_load_balancer
from controller.sandbox.demo_app import start_demo_app
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.ecs import TaskStandIn


def url_host(host: str) -> str:
    """The host a client on this machine reaches a server listening on `host` at."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _start_load_balancer(balancer: LoadBalancer, host: str, port: int) -> web.AppRunner:
    """On HOST:PORT, or, when that port is taken, on a free one (said in one line): nothing
    depends on its port but the person who reads the banner."""
    try:
        return await start_load_balancer(balancer, host, port)
    except OSError as exc:
        runner = await start_load_balancer(balancer, host, 0)
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) else str(exc)
        print(
            f"infra-controller: cannot listen on {host}:{port} ({reason}): the demo's load "
            f"balancer listens on {url_host(host)}:{bound_port(runner)} instead "
            "(choose with --alb-addr HOST:PORT)",
            file=sys.stderr,
            flush=True,
        )
        return runner


@asynccontextmanager
async def stand_ins_running(
    aws: AwsClients,
    stack: DemoStack,
    alb_addr: tuple[str, int],
    activator: tuple[str, int],
) -> AsyncIterator[str]:
    """The demo app, its task and its load balancer, until the context ends; yields the load
    balancer's URL. `activator`: the target group of the activator, and the port it listens
    on (on 127.0.0.1)."""
    region = stack.region
    async with AsyncExitStack() as resources:
        app = await start_demo_app()
        resources.push_async_callback(app.cleanup)
        name = stack.load_balancer.split("/")[1]  # `app/NAME/ID`
        balancer = LoadBalancer(aws, region, ListenerReader(aws, region, name))
        resources.push_async_callback(balancer.close)
        alb = await _start_load_balancer(balancer, *alb_addr)
        resources.push_async_callback(alb.cleanup)
        group, port = activator
        await aws.call(
            "elbv2",
            "RegisterTargets",
            region,
            TargetGroupArn=group,
            Targets=[{"Id": "127.0.0.1", "Port": port}],
        )
        task = TaskStandIn(
            aws, region, stack.cluster, stack.service, ("127.0.0.1", bound_port(app))
        )
        running = asyncio.create_task(task.run())
        try:
            yield f"http://{url_host(alb_addr[0])}:{bound_port(alb)}/"
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
