"""The controller's passes at N environments against the local emulator: AWS calls, CPU, wall
time, memory, log and /metrics volume, and what CloudWatch would bill for its metric reads;
against a baseline that does, in the same run, what the earlier Lambda did every minute for
each service: DescribeServices, GetMetricStatistics over the last 5 minutes, PutMetricData.
The figures that matter are the ratios: they hold on a loaded machine.

    .venv/bin/python bench/api_calls.py [--sizes 1,10,100,1000] [--passes 12]

For each size: a fleet of N services (each behind its own target group; `bench/fleet.py`), a
tenth of them (at most 100) visited every minute and sleeping after 5 idle minutes, the others
quiet and sleeping after an hour. The controller runs in a process of its own
(`bench/controller_passes.py`): a first pass with an empty state file, then `--passes` passes a
simulated minute apart. The baseline runs here, one service after another, over at most
`--baseline-sample` services (scaled to N: it is the same three calls for every service).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiobotocore.session import get_session
from botocore import xform_name

from bench.fleet import REGION, BenchAws, FleetService, create_fleet, desired_state
from controller.core.aws import AwsClients, chunks

HERE = Path(__file__).resolve().parent
# the controller's process as installed in production (`pip install .`, the image): without
# `rich`, which only the development tools bring and structlog imports when it finds it (3 MB)
AS_IN_PRODUCTION = (
    "import runpy, sys; sys.modules['rich'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
NAMESPACE = "InfraControllerBench"  # see bench/emulator.py
DOLLARS_PER_METRIC = 0.01 / 1000  # GetMetricData: $0.01 per 1,000 metrics requested
PASSES_PER_MONTH = 30 * 24 * 60  # one pass a minute
MIB = 1024 * 1024


@dataclass(frozen=True)
class Baseline:
    calls: int
    wall: float
    cpu: float


class LambdaClients:
    """The clients of the earlier Lambda: the SDK as it comes (boto3's defaults), one client per
    service, not the controller's `AwsClients` (its lighter models and settings)."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}

    async def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        if service not in self._clients:
            session: Any = get_session()
            self._clients[service] = await self._stack.enter_async_context(
                session.create_client(service, region_name=REGION)
            )
        answer: dict[str, Any] = await getattr(self._clients[service], xform_name(operation))(
            **params
        )
        return answer

    async def close(self) -> None:
        await self._stack.aclose()


async def baseline_pass(aws: LambdaClients, fleet: list[FleetService], now: datetime) -> Baseline:
    """What the earlier Lambda did for each service, every minute, one after another."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for member in fleet:
        await aws.call("ecs", "DescribeServices", cluster=member.cluster, services=[member.service])
        await aws.call(
            "cloudwatch",
            "GetMetricStatistics",
            Namespace="AWS/ApplicationELB",
            MetricName="RequestCount",
            Dimensions=[
                {"Name": "LoadBalancer", "Value": member.load_balancer},
                {"Name": "TargetGroup", "Value": member.target_group},
            ],
            StartTime=now - timedelta(minutes=5),
            EndTime=now,
            Period=60,
            Statistics=["Sum"],
        )
        dims = [{"Name": "Service", "Value": member.service}]
        await aws.call(
            "cloudwatch",
            "PutMetricData",
            Namespace=NAMESPACE,
            MetricData=[
                {"MetricName": "ServiceDesiredCount", "Dimensions": dims, "Value": 1.0},
                {"MetricName": "ServiceStatus", "Dimensions": dims, "Value": 1.0},
            ],
        )
    return Baseline(
        3 * len(fleet), time.perf_counter() - start_wall, time.process_time() - start_cpu
    )


async def visit(aws: AwsClients, busy: list[FleetService], at: datetime) -> None:
    """Requests to the busy services, as their ALB counts them in CloudWatch."""
    data = [
        {
            "MetricName": "RequestCount",
            "Dimensions": [
                {"Name": "LoadBalancer", "Value": m.load_balancer},
                {"Name": "TargetGroup", "Value": m.target_group},
            ],
            "Value": 3.0,
            "Timestamp": at,
            "Unit": "Count",
        }
        for m in busy
    ]
    for batch in chunks(data, 1000):
        await aws.call(
            "cloudwatch",
            "PutMetricData",
            REGION,
            Namespace="AWS/ApplicationELB",
            MetricData=list(batch),
        )


def max_bytes(desired: Path) -> int:
    """The CONTROLLER_MAX_DESIRED_STATE_BYTES a fleet's document needs: its node limit is
    10,000 per MiB allowed, and an environment with a service and an idle policy is 15 nodes."""
    environments = desired.read_text().count("\n  env-")
    return MIB * max(1, -(-environments * 16 // 10_000))


class Child:
    """The controller's process, one pass per line."""

    def __init__(self, desired: Path, state: Path, start: datetime) -> None:
        script = str(HERE / "controller_passes.py")
        limit = str(max_bytes(desired))
        arguments = [script, str(desired), str(state), str(start.timestamp()), limit]
        self.process = subprocess.Popen(
            [sys.executable, "-c", AS_IN_PRODUCTION, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the controller's process did not start: {ready!r}")

    def run(self, minute: int) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"PASS {minute}\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("EXIT\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)


async def measure(
    emulator: BenchAws, size: int, passes: int, sample: int, workdir: Path
) -> dict[str, Any]:
    emulator.reset()
    aws = AwsClients(REGION)
    built = time.perf_counter()
    fleet = await create_fleet(aws, size)
    print(f"  {size} services built in {time.perf_counter() - built:.0f} s", file=sys.stderr)
    busy = fleet[: min(100, max(1, size // 10))]
    desired = workdir / f"desired-{size}.yaml"
    desired.write_text(desired_state(fleet, len(busy)))
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=passes + 2)
    lambda_clients = LambdaClients()
    await baseline_pass(lambda_clients, fleet[:1], start)  # warm, as a warm Lambda's clients
    base = await baseline_pass(lambda_clients, fleet[:sample], start)
    await lambda_clients.close()
    scale = size / min(size, sample)
    baseline = Baseline(3 * size, base.wall * scale, base.cpu * scale)
    child = Child(desired, workdir / f"state-{size}.json", start)
    runs = []
    try:
        for minute in range(passes + 1):
            await visit(aws, busy, start + timedelta(minutes=minute, seconds=-20))
            runs.append(child.run(minute))
    finally:
        child.close()
        await aws.close()
    return summarise(size, len(busy), runs, baseline)


def summarise(
    size: int, busy: int, runs: list[dict[str, Any]], baseline: Baseline
) -> dict[str, Any]:
    first, warm = runs[0], runs[1:]

    def mean(key: str) -> float:
        return statistics.fmean(float(run[key]) for run in warm)

    calls = [sum(run["calls"].values()) for run in warm]
    by_operation: dict[str, float] = {}
    for run in warm:
        for operation, count in run["calls"].items():
            by_operation[operation] = by_operation.get(operation, 0) + count / len(warm)
    queries = mean("metric_queries")
    return {
        "environments": size,
        "busy": busy,
        "baseline": baseline.__dict__,
        "first": {k: first[k] for k in ("wall", "cpu", "calls")},
        "warm_calls_mean": statistics.fmean(calls),
        "warm_calls_max": max(calls),
        "warm_calls_by_operation": by_operation,
        "warm_wall": mean("wall"),
        "warm_cpu": mean("cpu"),
        "warm_gc": mean("gc_seconds"),
        "first_over_warm_wall": first["wall"] / mean("wall"),
        "calls_ratio": baseline.calls / statistics.fmean(calls),
        "cpu_ratio": baseline.cpu / mean("cpu"),
        "wall_ratio": mean("wall") / baseline.wall,
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "rss_mb": warm[-1]["rss_mb"],  # after the last pass
        "rss_by_pass": [round(run["rss_mb"], 1) for run in runs],
        "log_bytes_per_warm_pass": mean("log_bytes"),
        "log_bytes_first_pass": first["log_bytes"],
        "decision_lines_per_warm_pass": mean("decision_lines"),
        "metrics_bytes": warm[-1]["metrics_bytes"],
        "metrics_ms": warm[-1]["metrics_ms"],
        "metric_queries_per_warm_pass": queries,
        # the quiet services are not read in these passes: what the awake fleet costs is the
        # busy services' reads (the first pass's reads, once per service, are left out)
        "dollars_per_busy_service_month": queries / busy * PASSES_PER_MONTH * DOLLARS_PER_METRIC,
        "baseline_dollars_per_service_month": PASSES_PER_MONTH * DOLLARS_PER_METRIC,
        "results": warm[-1]["results"],
    }


def command_seconds(*argv: str, runs: int = 15) -> float:
    """The median wall time of a command (the CLI's start-up)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "| N | AWS calls per warm pass (controller / baseline) | CPU per warm pass "
        "(controller / baseline) | warm pass wall (ratio to baseline) | first pass, empty "
        "state (ratio to warm) | peak RSS | logs per warm pass | /metrics |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        b = r["baseline"]
        print(
            f"| {r['environments']:,} | {r['warm_calls_mean']:.1f} / {b['calls']:,} "
            f"({r['calls_ratio']:.1f}x fewer) | {r['warm_cpu'] * 1000:.0f} ms / "
            f"{b['cpu'] * 1000:.0f} ms ({r['cpu_ratio']:.1f}x less) | {r['warm_wall']:.2f} s "
            f"({r['wall_ratio']:.2f}) | {r['first']['wall']:.2f} s "
            f"({r['first_over_warm_wall']:.2f}x) | {r['peak_rss_mb']:.0f} MB | "
            f"{r['log_bytes_per_warm_pass'] / 1024:.1f} KB | {r['metrics_bytes'] / 1024:.0f} KB "
            f"in {r['metrics_ms']:.0f} ms |"
        )


async def main(args: argparse.Namespace) -> None:
    emulator = BenchAws()
    emulator.start()
    os.environ.update(emulator.environ(REGION))
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                print(f"N={size}", file=sys.stderr)
                result = await measure(emulator, size, args.passes, args.baseline_sample, Path(tmp))
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
            executable = str(Path(sys.executable).with_name("infra-controller"))
            help_seconds = command_seconds(executable, "--help")
            largest = Path(tmp) / f"desired-{args.sizes[-1]}.yaml"
            os.environ["CONTROLLER_MAX_DESIRED_STATE_BYTES"] = str(max_bytes(largest))
            validate_seconds = command_seconds(executable, "validate", str(largest), runs=5)
    finally:
        emulator.stop()
    print_table(results)
    for r in results:
        print(
            f"N={r['environments']:,}: warm calls by operation "
            + ", ".join(f"{op} {n:.1f}" for op, n in sorted(r["warm_calls_by_operation"].items()))
            + f"; GetMetricData metrics asked per warm pass {r['metric_queries_per_warm_pass']:.1f}"
            f" ({r['busy']} busy services: ${r['dollars_per_busy_service_month']:.3f} per busy "
            f"service-month, baseline ${r['baseline_dollars_per_service_month']:.3f})"
        )
    print(f"--help: {help_seconds * 1000:.0f} ms; validate N={args.sizes[-1]}: ", end="")
    print(f"{validate_seconds * 1000:.0f} ms (median)")


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes, default=[1, 10, 100, 1000])
    parser.add_argument("--passes", type=int, default=12, help="warm passes, a minute apart")
    parser.add_argument("--baseline-sample", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
