"""Soak: the real controller against the local AWS emulator behind a fault-injecting proxy.

20 environments. 16 with an idle policy and 2 powered by a stand-in terraform live in
eu-west-3, where 30 % of AWS requests fail in every way the proxy knows (throttling, 500,
hang, reset, truncated, garbage, HTML 200, delay); 2 live in eu-west-1, which no fault
touches. Visitors come and go (request counts written straight into the emulator), wakes are
asked through the API, power flips now and then. After every pass the safety invariants are
checked against what really happened; then the faults stop and the time to converge is
measured.

    .venv/bin/python bench/soak.py [--passes 1000] [--fault-rate 0.3] [--seed 7]

Invariants (each violation is counted and printed):
- a service that had a request within idle.after is never scaled to zero;
- no Terraform run starts unless the environment's desired power needs one;
- never two Terraform runs alive for one environment;
- every accepted wake is satisfied once faults stop;
- every environment no fault can touch (eu-west-1) is reconciled successfully every pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.core.aws import AwsClients
from controller.core.clock import ManualClock
from controller.core.settings import Settings
from controller.engine.controller import Controller
from controller.engine.passes import PassReport
from controller.logging_setup import configure_logging
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import LocalAws
from controller.sandbox.traffic import send_requests
from controller.wiring import build_controller
from tests.fault_proxy import FAULT_KINDS, Fault, FaultProxy

FAULTY, CONTROL = "eu-west-3", "eu-west-1"
IDLE_AFTER = timedelta(minutes=5)
STEP = timedelta(minutes=1)  # the simulated time between passes
STAND_IN = """#!{python}
# a terraform that records each run and notices two running at once (flock on the workdir)
import fcntl, json, os, sys, time
command = sys.argv[1] if len(sys.argv) > 1 else ""
if command == "init":
    sys.exit(0)
with open("terraform.lock", "a") as lock:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        open("overlaps.log", "a").write(command + "\\n")
        fcntl.flock(lock, fcntl.LOCK_EX)
    open("runs.log", "a").write(json.dumps({{"op": command, "at": time.time()}}) + "\\n")
    time.sleep(0.3)
"""


@dataclass
class Truth:
    """What really happened, to judge the controller's actions by."""

    last_request: dict[str, float] = field(default_factory=dict)  # env -> simulated seconds
    wakes: dict[str, int] = field(default_factory=dict)  # env -> wakes accepted
    violations: Counter[str] = field(default_factory=Counter)


def desired_document(stacks: dict[str, DemoStack], powered: dict[str, Path], power: str) -> str:
    lines = ["version: 1", "environments:"]
    for index, (name, stack) in enumerate(stacks.items()):
        wake = "on-request" if index % 2 else "manual"
        lines += [
            f"  {name}:",
            "    power: on",
            f"    region: {stack.region}",
            f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}",
            f"    idle: {{after: 5m, active_count: 1, wake: {wake}}}",
        ]
    for name, workdir in powered.items():
        lines += [
            f"  {name}:",
            f"    power: {power}",
            f"    region: {FAULTY}",
            f"    terraform: {{runner: cli, workdir: {workdir}, timeout: 5m}}",
        ]
    return "\n".join(lines) + "\n"


async def build_world(seed: AwsClients, work: Path) -> tuple[dict[str, DemoStack], dict[str, Path]]:
    stacks: dict[str, DemoStack] = {}
    for region, count, name in ((FAULTY, 8, "a"), (FAULTY, 8, "b"), (CONTROL, 2, "c")):
        for index, stack in enumerate(await create_demo_stack(seed, region, name, count)):
            stacks[f"{name}-{index}"] = stack
    bin_dir = work / "bin"
    bin_dir.mkdir()
    script = bin_dir / "terraform"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    powered = {}
    for name in ("p-0", "p-1"):
        powered[name] = work / name
        powered[name].mkdir()
    return stacks, powered


def no_services(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "services": [], "failures": []}


def partial_data(answer: dict[str, Any]) -> dict[str, Any]:
    results = [
        {**r, "Timestamps": [], "Values": [], "StatusCode": "PartialData"}
        for r in answer.get("MetricDataResults", [])
    ]
    return {**answer, "MetricDataResults": results}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def check(report: PassReport, truth: Truth, now: float, power: str) -> None:
    for name, outcome in report.environments.items():
        for _, decision in outcome.decisions:
            if decision.action == "scale_to_zero":
                last = truth.last_request.get(name)
                if last is not None and now - last < IDLE_AFTER.total_seconds():
                    truth.violations["scaled to zero with recent requests"] += 1
            wanted = "terraform_apply" if power == "on" else "terraform_destroy"
            if decision.action.startswith("terraform_") and decision.action != wanted:
                truth.violations["a run the desired power does not need"] += 1
        if name.startswith("c-") and outcome.result != "success":
            truth.violations["an untouched environment not reconciled"] += 1


async def soak(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    emulator = LocalAws()
    emulator.start()
    os.environ.update(emulator.environ(FAULTY))
    proxy = FaultProxy(emulator.endpoint, seed=args.seed)
    os.environ["AWS_ENDPOINT_URL"] = await proxy.start()
    seed = AwsClients(FAULTY)  # set-up and visitors: created now, they also go through the proxy
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stacks, powered = await build_world(seed, work)
        power = "on"
        desired = work / "desired_state.yaml"
        desired.write_text(desired_document(stacks, powered, power))
        clock = ManualClock()
        settings = Settings(
            desired_state=str(desired),
            state_store=f"file://{work / 'state.json'}",
            runs_dir=str(work / "runs"),
            interval="60s",
            pass_timeout="4s",  # each AWS call then has 1.3 s: a hang costs no more
            aws_region=FAULTY,
        )
        controller = build_controller(settings, clock=clock, aws_max_attempts=2)
        truth = Truth()
        start = clock.now()
        await controller.reconcile_once()  # a clean first pass: services first seen
        rss_before = rss_mb()
        # each kind in turn gets its chance: together, `fault_rate` of the requests fail
        rate = 1 - (1 - args.fault_rate) ** (1 / len(FAULT_KINDS))
        proxy.set(
            *(Fault(kind, rate=rate, region=FAULTY, delay=0.2) for kind in FAULT_KINDS),
            # answers that parse but say something else
            Fault("rewrite", "DescribeServices", rate, region=FAULTY, rewrite=no_services),
            Fault("rewrite", "GetMetricData", rate, region=FAULTY, rewrite=partial_data),
        )
        began = time.perf_counter()
        for index in range(args.passes):
            clock.advance(STEP)
            now = (clock.now() - start).total_seconds()
            if rng.random() < 0.05:
                name = rng.choice(list(stacks))
                if controller.request_wake(name) is None:
                    truth.wakes[name] = truth.wakes.get(name, 0) + 1
            if index and index % 200 == 0:  # power flips now and then
                power = "off" if power == "on" else "on"
                desired.write_text(desired_document(stacks, powered, power))
            check(await controller.reconcile_once(), truth, now, power)
            # visitors of this minute: counted from now on, as the ALB publishes them
            await visit(seed, stacks, truth, rng, clock, now, proxy)
        faulty_seconds = time.perf_counter() - began
        proxy.clear()
        recovery = await converge(controller, clock)
        rss_after = rss_mb()
        overlaps = sum(
            len((w / "overlaps.log").read_text().splitlines())
            for w in powered.values()
            if (w / "overlaps.log").exists()
        )
        truth.violations["two runs alive at once"] += overlaps
        await report_figures(args, proxy, truth, faulty_seconds, recovery, rss_before, rss_after)
        await controller.close(stop_runs=True)
    await seed.close()
    await proxy.stop()
    emulator.stop()


async def visit(
    seed: AwsClients,
    stacks: dict[str, DemoStack],
    truth: Truth,
    rng: random.Random,
    clock: ManualClock,
    now: float,
    proxy: FaultProxy,
) -> None:
    """Some environments get visitors this minute (written as the ALB would count them)."""
    faults, proxy.faults = proxy.faults, []  # the visitors themselves are not faulted
    try:
        for name, stack in stacks.items():
            if rng.random() < 0.15:
                try:
                    served = await send_requests(seed, stack, rng.randint(1, 5), clock.now())
                except Exception:
                    continue
                if served:
                    truth.last_request[name] = now
    finally:
        proxy.faults = faults


async def converge(controller: Controller, clock: ManualClock) -> tuple[int, float]:
    """Passes (and seconds) until every environment reconciles without error and every
    accepted wake is satisfied."""
    began = time.perf_counter()
    for passes in range(1, 200):
        clock.advance(timedelta(minutes=16))  # past any backoff
        report = await controller.reconcile_once()
        if not report.failed and not any(
            env.wake_pending for env in controller.snapshot().environments.values()
        ):
            return passes, time.perf_counter() - began
    return -1, time.perf_counter() - began


async def report_figures(
    args: argparse.Namespace,
    proxy: FaultProxy,
    truth: Truth,
    faulty_seconds: float,
    recovery: tuple[int, float],
    rss_before: float,
    rss_after: float,
) -> None:
    injected = Counter[str]()
    for (kind, _), count in proxy.injected.items():
        injected[kind] += count
    figures = {
        "passes": args.passes,
        "environments": 20,
        "aws_requests": sum(proxy.requests.values()),
        "faults_injected": sum(injected.values()),
        "fault_rate_in_faulty_region": round(sum(injected.values()) / max(proxy.eligible, 1), 3),
        "faults_by_kind": dict(sorted(injected.items())),
        "wakes_accepted": sum(truth.wakes.values()),
        "invariant_violations": dict(truth.violations) or 0,
        "seconds_under_faults": round(faulty_seconds, 1),
        "recovery_passes": recovery[0],
        "recovery_seconds": round(recovery[1], 2),
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
    }
    print(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=1000)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    with open(os.devnull, "w") as quiet:
        configure_logging("json", stream=quiet)
        asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
