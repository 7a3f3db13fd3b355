"""One controller alone in its process, driven pass by pass by `bench/api_calls.py`, so that
its CPU time and its memory are its own (the emulator, the fleet's set-up, the visitors and the
baseline run in other processes).

    python bench/controller_passes.py DESIRED_STATE STATE_FILE START_EPOCH MAX_BYTES

It prints `ready` once built. Then each line `PASS K` on its standard input runs one pass at
START + K minutes (a manual clock: the passes of an hour take seconds) and prints one JSON line
of figures; `EXIT` ends it.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import json
import os
import sys
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest

from controller.cli_run import settle_after_first_pass, tune_garbage_collector
from controller.core.clock import ManualClock
from controller.core.settings import Settings
from controller.engine.controller import Controller
from controller.engine.passes import PassReport
from controller.logging_setup import configure_logging
from controller.wiring import build_controller

NAMESPACE = "InfraControllerBench"  # see bench/emulator.py


class CountingSink(io.TextIOBase):
    """Where the JSON log lines go: counted, not kept."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.decisions = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        self.decisions += text.count('"event": "decision"')
        return len(text)

    def isatty(self) -> bool:
        return False


class GcTime:
    """Time the garbage collector takes (its pauses are the controller's CPU too)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


def rss_mb() -> tuple[float, float]:
    """(resident now, peak) in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    now = int(fields["VmRSS"].split()[0]) / 1024
    # VmHWM, not getrusage's ru_maxrss: that one keeps the peak of the process this one was
    # forked from (the benchmark's), across exec
    peak = int(fields["VmHWM"].split()[0]) / 1024
    return now, peak


def api_calls(controller: Controller) -> Counter[str]:
    out: Counter[str] = Counter()
    for family in controller.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "infra_controller_aws_api_calls_total":
                out[sample.labels["operation"]] += int(sample.value)
    return out


def count_metric_queries(controller: Controller, queries: list[int]) -> None:
    """Every metric asked of GetMetricData (CloudWatch bills each), through the SDK's hooks."""
    engine = controller._engine  # a benchmark looks inside
    idle: Any = next(r for r in engine.reconcilers if r.name == "idle")
    session = idle._aws._session

    def counted(params: dict[str, Any], **_: Any) -> None:
        queries[0] += len(params.get("MetricDataQueries", ()))

    session.register("provide-client-params.cloudwatch.GetMetricData", counted)


def figures(
    report: PassReport, wall: float, cpu: float, calls: Counter[str], sink: CountingSink
) -> dict[str, Any]:
    return {
        "wall": wall,
        "cpu": cpu,
        "calls": dict(calls),
        "results": dict(Counter(report.results.values())),
        "actions": dict(Counter(o.summary()[0] for o in report.environments.values())),
        "log_bytes": sink.bytes,
        "log_lines": sink.lines,
        "decision_lines": sink.decisions,
    }


class Growth:
    """BENCH_TRACEMALLOC=1: what the passes after the third left allocated, by line."""

    def __init__(self) -> None:
        self.on = bool(os.environ.get("BENCH_TRACEMALLOC"))
        self.since: tracemalloc.Snapshot | None = None
        if self.on:
            tracemalloc.start()

    def mark(self) -> None:
        if self.on:
            self.since = tracemalloc.take_snapshot()

    def report(self) -> None:
        if self.since is not None:
            for stat in tracemalloc.take_snapshot().compare_to(self.since, "lineno")[:25]:
                print(stat, file=sys.stderr)


async def main(desired: str, state: str, start: datetime, max_bytes: int) -> None:
    growth = Growth()
    sink = CountingSink()
    configure_logging("json", stream=sink)  # type: ignore[arg-type]
    clock = ManualClock(start)
    settings = Settings(
        desired_state=desired,
        state_store=f"file://{state}",
        cloudwatch_namespace=NAMESPACE,
        aws_region="eu-west-3",
        max_desired_state_bytes=max_bytes,  # a larger fleet is a larger document
    )
    print(f"  imports: {rss_mb()[0]:.1f} MB", file=sys.stderr)
    controller = build_controller(settings, clock=clock)
    queries = [0]
    count_metric_queries(controller, queries)
    collected = GcTime()
    tune_garbage_collector()  # as `infra-controller run` does
    await controller.refresh_desired_state()  # as `run` does before its first pass
    print(f"  controller built, desired state read: {rss_mb()[0]:.1f} MB", file=sys.stderr)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while (line := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) != "EXIT":
        clock.advance(start + timedelta(minutes=int(line.split()[1])) - clock.now())
        before, asked = api_calls(controller), queries[0]
        sink.bytes = sink.lines = sink.decisions = 0
        collected.seconds, collected.collections = 0.0, 0
        if profiler is not None and line != "PASS 0":  # the warm passes
            profiler.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        report = await controller.reconcile_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        out = figures(report, wall, cpu, api_calls(controller) - before, sink)
        rendered = time.perf_counter()
        body = generate_latest(controller.metrics.registry)
        out["metrics_ms"] = (time.perf_counter() - rendered) * 1000
        out["metrics_bytes"] = len(body)
        out["metric_queries"] = queries[0] - asked
        out["gc_seconds"], out["gc_collections"] = collected.seconds, collected.collections
        out["rss_mb"], out["peak_rss_mb"] = rss_mb()
        print(json.dumps(out), flush=True)
        if line == "PASS 0":
            settle_after_first_pass()  # as the daemon does
        if line == "PASS 2":
            growth.mark()
    growth.report()
    await controller.close()
    if profiler is not None:
        profiler.dump_stats(os.environ["BENCH_PROFILE"])


# BENCH_PROFILE=FILE: the warm passes' profile (cProfile, this thread), for `python -m pstats`
profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None

if __name__ == "__main__":
    started = datetime.fromtimestamp(float(sys.argv[3]), UTC)
    asyncio.run(main(sys.argv[1], sys.argv[2], started, int(sys.argv[4])))
