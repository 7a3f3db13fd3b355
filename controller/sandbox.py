"""`infra-controller sandbox`: the product's embedded default, with no AWS account.

Starts the local AWS emulator, creates the demo stack in it, writes a desired state with short
demo durations, simulates visitors, and runs the real controller (loop + HTTP server) against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import structlog

from controller.aws import AwsClients
from controller.clock import SystemClock
from controller.demo_stack import create_demo_stack
from controller.emulator import LocalAws
from controller.http_api import bound_port, start_http_server
from controller.logging_setup import configure_logging
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.settings import Settings
from controller.sources import FileSource
from controller.state_store import FileStateStore
from controller.traffic import run_simulator
from reconcilers.idle import IdleReconciler

log = structlog.get_logger("infra_controller.sandbox")

REGION = "eu-west-3"
DEMO_DESIRED_STATE = """\
# The sandbox's desired state: one environment, with demo durations (a real one would idle
# after minutes, not seconds). Edit it while the sandbox runs: the controller picks it up at once.
# Try `power: off`: a (stand-in) terraform destroy removes the demo stack; `power: on` recreates it.
version: 1
environments:
  demo:
    power: on
    region: {region}
    terraform:
      runner: cli
      workdir: {terraform_workdir}
      timeout: 5m
    service:
      cluster: {cluster}
      name: {service}
    idle:
      after: 30s          # no request for 30 s -> desiredCount 0
      active_count: 1
      wake: on-request    # a request answered 503 while at zero wakes it
"""


def _prepare_workdir(requested: str | None) -> Path:
    """The sandbox's files, and a stand-in `terraform` (first on PATH) that creates and deletes
    the demo stack in the emulator."""
    workdir = Path(requested or tempfile.mkdtemp(prefix="infra-controller-sandbox-")).resolve()
    (workdir / "infra").mkdir(parents=True, exist_ok=True)
    (workdir / "infra" / "sandbox-stack.json").write_text(
        json.dumps({"region": REGION, "name": "demo", "seconds": 6})
    )
    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "terraform"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from controller.sandbox_terraform import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    stand_in.chmod(0o755)
    return workdir


async def run_sandbox(args: argparse.Namespace) -> int:
    settings_flags = {
        "http_addr": args.http_addr or "127.0.0.1:8080",
        "log_format": args.log_format,
        "interval": "5s",
    }
    workdir = await asyncio.to_thread(_prepare_workdir, args.workdir)
    configure_logging(args.log_format or "console")
    emulator = LocalAws()
    log.info("starting the local AWS emulator", endpoint=emulator.endpoint)
    await asyncio.to_thread(emulator.start)
    os.environ.update(emulator.environ(REGION))
    os.environ["PATH"] = f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    simulator_aws = AwsClients(ControllerMetrics(), REGION)
    controller_aws: AwsClients | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        (stack,) = await create_demo_stack(simulator_aws, REGION)
        desired_path = workdir / "desired_state.yaml"
        text = DEMO_DESIRED_STATE.format(
            region=REGION,
            cluster=stack.cluster,
            service=stack.service,
            terraform_workdir=workdir / "infra",
        )
        await asyncio.to_thread(desired_path.write_text, text)
        settings = Settings(
            desired_state=str(desired_path),
            state_store=f"file://{workdir / 'state.json'}",
            runs_dir=str(workdir / "runs"),
            **{k: v for k, v in settings_flags.items() if v is not None},
        )
        metrics = ControllerMetrics()
        controller_aws = AwsClients(metrics, REGION)
        clock = SystemClock()
        controller = Controller(
            settings=settings,
            source=FileSource(str(desired_path)),
            aws=controller_aws,
            store=FileStateStore(str(workdir / "state.json")),
            clock=clock,
            metrics=metrics,
            # demo resolution: 10 s metric buckets instead of the ALB's 60 s
            idle=IdleReconciler(
                controller_aws,
                metric_period=timedelta(seconds=10),
                lookback_margin=timedelta(minutes=2),
            ),
        )
        runner = await start_http_server(controller, settings.http_host, settings.http_port)
        port = bound_port(runner)
        log.info(
            "sandbox ready",
            desired_state=str(desired_path),
            metrics=f"http://{settings.http_host}:{port}/metrics",
            status=f"http://{settings.http_host}:{port}/status",
            emulator=emulator.endpoint,
            story="traffic -> 30 s of silence -> scale to zero -> a request gets 503 -> wake",
            try_this=f"edit {desired_path}: power: off destroys the demo stack, power: on "
            "recreates it",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        tasks.append(
            asyncio.create_task(
                run_simulator(simulator_aws, REGION, stack.cluster, stack.service, clock)
            )
        )
        try:
            await controller.run(stop)
        finally:
            await runner.cleanup()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await simulator_aws.close()
        if controller_aws is not None:
            await controller_aws.close()
        await asyncio.to_thread(emulator.stop)
        log.info("sandbox stopped", workdir=str(workdir))
    return 0
