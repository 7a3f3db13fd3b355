"""API calls and wall time of one reconcile pass, for 1 and 20 environments, against the local
emulator. The baseline is the same observation made one environment at a time (what the earlier
per-service Lambda did), measured in the same run: the figures printed are ratios, not limits.

    .venv/bin/python bench/api_calls.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.core.aws import AwsClients
from controller.core.clock import ManualClock
from controller.core.settings import Settings
from controller.engine.metrics import ControllerMetrics
from controller.logging_setup import configure_logging
from controller.sandbox.demo_stack import create_demo_stack
from controller.sandbox.emulator import LocalAws
from controller.wiring import build_controller

REGION = "eu-west-3"


def calls(metrics: ControllerMetrics) -> dict[str, int]:
    out: dict[str, int] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "infra_controller_aws_api_calls_total":
                out[sample.labels["operation"]] = out.get(sample.labels["operation"], 0) + int(
                    sample.value
                )
    return out


async def one_pass(environments: int, workdir: Path, batched: bool) -> tuple[dict[str, int], float]:
    seed = AwsClients(REGION)
    stacks = await create_demo_stack(
        seed, REGION, name=f"b{environments}{int(batched)}", services=environments
    )
    await seed.close()
    docs = [
        f"  env-{i}:\n    power: on\n    service: {{cluster: {s.cluster}, name: {s.service}}}\n"
        "    idle: {after: 5m}\n"
        for i, s in enumerate(stacks)
    ]
    groups = [docs] if batched else [[d] for d in docs]
    totals: dict[str, int] = {}
    elapsed = 0.0
    for index, group in enumerate(groups):
        path = workdir / f"ds-{environments}-{batched}-{index}.yaml"
        path.write_text("version: 1\nenvironments:\n" + "".join(group))
        state = workdir / f"state-{environments}-{batched}-{index}.json"
        settings = Settings(desired_state=str(path), state_store=f"file://{state}")
        controller = build_controller(settings, clock=ManualClock())
        await controller.reconcile_once()  # warm-up: clients created, service first seen
        before = calls(controller.metrics)
        start = time.perf_counter()
        await controller.reconcile_once()
        elapsed += time.perf_counter() - start
        for op, n in calls(controller.metrics).items():
            totals[op] = totals.get(op, 0) + n - before.get(op, 0)
        await controller.close()
    return totals, elapsed


async def main() -> None:
    emulator = LocalAws()
    emulator.start()
    os.environ.update(emulator.environ(REGION))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(
                f"{'environments':>12} {'mode':>10} {'API calls':>9}  {'pass (s)':>8}  by operation"
            )
            for n in (1, 20):
                results = {}
                for batched in (False, True):
                    ops, seconds = await one_pass(n, Path(tmp), batched)
                    results[batched] = (sum(ops.values()), seconds)
                    mode = "batched" if batched else "baseline"
                    detail = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
                    print(f"{n:>12} {mode:>10} {sum(ops.values()):>9}  {seconds:>8.3f}  {detail}")
                (base_calls, base_s), (calls_b, secs_b) = results[False], results[True]
                ratio = f"{calls_b / base_calls:>9.2f}  {secs_b / base_s:>8.2f}"
                print(f"{n:>12} {'ratio':>10} {ratio}  batched / baseline")
    finally:
        emulator.stop()


if __name__ == "__main__":
    with open(os.devnull, "w") as quiet:
        configure_logging("json", stream=quiet)  # the benchmark prints figures, not logs
        asyncio.run(main())
