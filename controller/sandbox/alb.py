"""A stand-in for the demo's Application Load Balancer: the emulator keeps the ALB's
configuration but moves no request, so this small reverse proxy on 127.0.0.1 does.

Per request it routes as an ALB does, from the configuration of the load balancer's (first)
listener held in the emulator, read again once a second, and at once when a request finds no
healthy target (so the controller's switches to the activator and back show as they would on
AWS): the rules by priority, each matching when all its conditions do
(`host-header` and `path-pattern`; a rule with any other condition never matches here), then
the listener's default action; a weighted forward picks its target group by weight. It
forwards to a healthy target of that group (DescribeTargetHealth) and, like an ALB, answers
503 itself when there is none, 502 when the target refuses the connection, 504 when it does
not answer in time. Actions besides `forward` and `fixed-response` (redirects, authentication)
are not done: such a request gets 502 saying so.

Each request is counted in CloudWatch as the ALB counts it: `RequestCount` (LoadBalancer and
TargetGroup dimensions) when a target was chosen, `HTTPCode_ELB_503_Count` (and 502, 504)
when the load balancer answered itself, `HTTPCode_Target_5XX_Count` for a target's 5xx.
Unlike an ALB, the figures are in CloudWatch when the answer leaves, not minutes later.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from controller.core.aws import AwsClients, AwsError, arn_resource
from controller.core.clock import Clock, SystemClock
from controller.sandbox.traffic import put_alb_metrics

log = structlog.get_logger("infra_controller.sandbox.alb")

CONFIG_TTL_SECONDS = 1.0
REFRESH_AFTER_SECONDS = 0.1  # a burst of 503s re-reads the configuration once, not each
TARGET_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)  # an ALB's defaults
MAX_BODY = 1024 * 1024
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
    )
)
Action = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    priority: int
    conditions: tuple[Mapping[str, Any], ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class ListenerConfig:
    """One listener of the load balancer: its rules by priority, and its default actions."""

    load_balancer: str  # the `app/NAME/ID` dimension value
    port: int
    rules: tuple[Rule, ...]
    default_actions: tuple[Action, ...]


def _pattern(value: str, case_sensitive: bool) -> re.Pattern[str]:
    """An ALB condition value: `*` matches any characters (`/` too), `?` exactly one."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def _values(condition: Mapping[str, Any], config_key: str) -> list[str]:
    config = condition.get(config_key)
    if isinstance(config, Mapping) and config.get("Values"):
        return [str(v) for v in config["Values"]]
    return [str(v) for v in condition.get("Values") or []]


def condition_matches(condition: Mapping[str, Any], host: str, path: str) -> bool:
    field = condition.get("Field")
    if field == "host-header":
        return any(
            _pattern(v, False).fullmatch(host) for v in _values(condition, "HostHeaderConfig")
        )
    if field == "path-pattern":
        return any(
            _pattern(v, True).fullmatch(path) for v in _values(condition, "PathPatternConfig")
        )
    return False  # not evaluated here: such a rule is passed over, as documented above


def routing_action(config: ListenerConfig, host: str, path: str) -> Action | None:
    """The action an ALB takes for a request to `host` (without port) and `path`: the first
    rule, by priority, whose conditions all match, else the default; its last action (the
    ones before it authenticate)."""
    for rule in config.rules:
        if all(condition_matches(c, host, path) for c in rule.conditions):
            return _final(rule.actions)
    return _final(config.default_actions)


def _final(actions: Sequence[Action]) -> Action | None:
    ordered = sorted(enumerate(actions), key=lambda item: (item[1].get("Order", 0), item[0]))
    return ordered[-1][1] if ordered else None


def forward_target_group(action: Action, rng: random.Random) -> str | None:
    """The target group a forward action sends this request to (by weight for a weighted
    forward); None when every weight is 0."""
    config = action.get("ForwardConfig")
    groups = config.get("TargetGroups") if isinstance(config, Mapping) else None
    if groups:
        arns = [str(g["TargetGroupArn"]) for g in groups]
        weights = [int(g.get("Weight", 1)) for g in groups]
        if sum(weights) <= 0:
            return None
        return rng.choices(arns, weights)[0]
    arn = action.get("TargetGroupArn")
    return str(arn) if arn else None


def request_host(header: str) -> str:
    """The host name an ALB matches host conditions against: the `Host` header without port."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ListenerReader:
    """The load balancer's first listener as the emulator holds it, read again once the
    copy is `ttl` seconds old; None while the load balancer does not exist (powered off)."""

    def __init__(
        self,
        aws: AwsClients,
        region: str,
        load_balancer_name: str,
        ttl: float = CONFIG_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws, self._region, self._name = aws, region, load_balancer_name
        self._ttl, self._monotonic = ttl, monotonic
        self._cached: tuple[float, ListenerConfig | None] | None = None
        self._lock = asyncio.Lock()

    async def config(self, refresh: bool = False) -> ListenerConfig | None:
        """The configuration; `refresh`: read now, unless it was within the last 100 ms."""
        async with self._lock:  # a burst of requests reads the emulator once
            now = self._monotonic()
            ttl = min(self._ttl, REFRESH_AFTER_SECONDS) if refresh else self._ttl
            if self._cached is None or now - self._cached[0] >= ttl:
                self._cached = (now, await self._read())
            return self._cached[1]

    async def _read(self) -> ListenerConfig | None:
        call = self._aws.call
        try:
            lbs = await call("elbv2", "DescribeLoadBalancers", self._region, Names=[self._name])
        except AwsError as exc:
            if exc.code == "LoadBalancerNotFound":
                return None
            raise
        lb_arn = lbs["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = (
            await call("elbv2", "DescribeListeners", self._region, LoadBalancerArn=lb_arn)
        )["Listeners"]
        if not listeners:
            return None
        listener = listeners[0]
        answer = await call(
            "elbv2", "DescribeRules", self._region, ListenerArn=listener["ListenerArn"]
        )
        rules = sorted(
            (
                Rule(int(r["Priority"]), tuple(r.get("Conditions", [])), tuple(r["Actions"]))
                for r in answer["Rules"]
                if not r.get("IsDefault")  # the listener's default actions, read above
            ),
            key=lambda rule: rule.priority,
        )
        return ListenerConfig(
            load_balancer=arn_resource(lb_arn, "loadbalancer"),
            port=int(listener.get("Port", 80)),
            rules=tuple(rules),
            default_actions=tuple(listener["DefaultActions"]),
        )


ELB_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def _elb_page(status: int, note: str = "") -> web.Response:
    """An answer of the load balancer itself, as an ALB writes it."""
    title = ELB_PAGES[status]
    comment = f"<!-- sandbox load balancer: {note} -->\n" if note else ""
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n{comment}"
    )
    return web.Response(status=status, text=body, content_type="text/html")


class LoadBalancer:
    """The proxy: routes each request as described above, forwards it, counts it."""

    def __init__(
        self,
        aws: AwsClients,
        region: str,
        reader: ListenerReader,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._aws, self._region, self.reader = aws, region, reader
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except AwsError as exc:  # the emulator, not the demo, failed: nothing to count
            log.warning("the load balancer could not read its configuration", error=str(exc))
            return _elb_page(503, "the emulator did not answer")

    async def _route(
        self, request: web.Request, refresh: bool
    ) -> web.Response | tuple[ListenerConfig, str | None, list[tuple[str, int]]]:
        """The load balancer's own answer, or where the request goes: the listener, the
        target group and its healthy targets."""
        config = await self.reader.config(refresh=refresh)
        if config is None:
            return web.Response(
                status=503, text="There is no load balancer: the demo stack is powered off.\n"
            )
        action = routing_action(config, request_host(request.host), request.path)
        if action is None or action.get("Type") not in ("forward", "fixed-response"):
            kind = action.get("Type") if action else "no action"
            return _elb_page(502, f"{kind} is not done by this stand-in")
        if action["Type"] == "fixed-response":
            return _fixed(action)
        group = forward_target_group(action, self._rng)
        return config, group, await self._healthy(group) if group else []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = await self._route(request, refresh=False)
        if not isinstance(route, web.Response) and not route[2]:
            # a target group left without targets is what the controller's switch to the
            # activator follows: a real ALB has the new route already, not a second later
            route = await self._route(request, refresh=True)
        if isinstance(route, web.Response):
            return route
        config, group, targets = route
        if group is None or not targets:
            await self._count(config, None, {"HTTPCode_ELB_503_Count": 1})
            return _elb_page(503, "no healthy target")
        address, port = self._rng.choice(targets)
        try:
            response = await self._forward(request, f"http://{address}:{port}", config)
        except TimeoutError:
            await self._count(config, group, {"RequestCount": 1, "HTTPCode_ELB_504_Count": 1})
            return _elb_page(504, "the target did not answer in time")
        except aiohttp.ClientError:
            await self._count(config, group, {"RequestCount": 1, "HTTPCode_ELB_502_Count": 1})
            return _elb_page(502, "the target refused the connection")
        counts = {"RequestCount": 1}
        if response.status >= 500:
            counts["HTTPCode_Target_5XX_Count"] = 1
        await self._count(config, group, counts)
        return response

    async def _healthy(self, group: str) -> list[tuple[str, int]]:
        answer = await self._aws.call(
            "elbv2", "DescribeTargetHealth", self._region, TargetGroupArn=group
        )
        return [
            (str(t["Target"]["Id"]), int(t["Target"]["Port"]))
            for t in answer["TargetHealthDescriptions"]
            if t["TargetHealth"]["State"] == "healthy"
        ]

    async def _forward(
        self, request: web.Request, target: str, config: ListenerConfig
    ) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TARGET_TIMEOUT, auto_decompress=False)
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        peer = request.remote or "127.0.0.1"
        forwarded = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        headers["X-Forwarded-Proto"] = "http"
        headers["X-Forwarded-Port"] = str(config.port)
        body = await request.read()
        async with self._session.request(
            request.method,
            URL(target + request.rel_url.raw_path_qs, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as answer:
            content = await answer.read()
            kept = CIMultiDict(
                (k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP
            )
            return web.Response(status=answer.status, body=content, headers=kept)

    async def _count(
        self, config: ListenerConfig, group: str | None, counts: Mapping[str, int]
    ) -> None:
        tg = arn_resource(group, "targetgroup") if group else None
        try:
            await put_alb_metrics(
                self._aws, self._region, config.load_balancer, tg, counts, self._clock.now()
            )
        except AwsError as exc:  # a lost figure must not lose the visitor's answer
            log.warning("load balancer metrics not written", error=str(exc))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _fixed(action: Action) -> web.Response:
    config = action.get("FixedResponseConfig", {})
    return web.Response(
        status=int(config.get("StatusCode", 200)),
        text=str(config.get("MessageBody", "")),
        content_type=str(config.get("ContentType", "text/plain")),
    )


async def start_load_balancer(balancer: LoadBalancer, host: str, port: int) -> web.AppRunner:
    """Serve until `runner.cleanup()` (which does not close `balancer`)."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", balancer.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
