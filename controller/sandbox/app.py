"""`infra-controller sandbox`: the product's embedded default, with no AWS account.

Starts the local AWS emulator, creates the demo stack in it, writes a desired state with short
demo durations, simulates visitors, and runs the real controller (loop + HTTP server) against it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import structlog

from controller.core.aws import AwsClients
from controller.core.clock import SystemClock
from controller.core.settings import Settings
from controller.engine.controller import Controller
from controller.http_api import bound_port, start_http_server
from controller.logging_setup import configure_logging
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import LocalAws
from controller.sandbox.traffic import run_simulator
from controller.wiring import IdleTuning, build_controller

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
        "from controller.sandbox.terraform_standin import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    stand_in.chmod(0o755)
    return workdir


MISSING_EMULATOR = (
    "infra-controller: the sandbox needs the local AWS emulator, which a production install "
    "does not carry. Install it with: pip install 'infra-controller[sandbox]' "
    "(from a clone: pip install '.[sandbox]', or `make sandbox`, which also starts it)"
)


def emulator_installed() -> bool:
    return importlib.util.find_spec("moto") is not None


async def run_sandbox(args: argparse.Namespace) -> int:
    if not emulator_installed():
        print(MISSING_EMULATOR, file=sys.stderr)
        return 2
    workdir = await asyncio.to_thread(_prepare_workdir, args.workdir)
    configure_logging(args.log_format or "console")
    emulator = LocalAws()
    log.info("starting the local AWS emulator", endpoint=emulator.endpoint)
    await asyncio.to_thread(emulator.start)
    os.environ.update(emulator.environ(REGION))
    os.environ["PATH"] = f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    simulator_aws = AwsClients(REGION)
    try:
        (stack,) = await create_demo_stack(simulator_aws, REGION)
        controller = await _demo_controller(args, workdir, stack)
        try:
            await _serve(args, controller, workdir, emulator, simulator_aws, stack)
        finally:
            await controller.close()
    finally:
        await simulator_aws.close()
        await asyncio.to_thread(emulator.stop)
        log.info("sandbox stopped", workdir=str(workdir))
    return 0


async def _demo_controller(args: argparse.Namespace, workdir: Path, stack: DemoStack) -> Controller:
    desired_path = workdir / "desired_state.yaml"
    text = DEMO_DESIRED_STATE.format(
        region=REGION,
        cluster=stack.cluster,
        service=stack.service,
        terraform_workdir=workdir / "infra",
    )
    await asyncio.to_thread(desired_path.write_text, text)
    flags = {"log_format": args.log_format} if args.log_format else {}
    settings = Settings(
        desired_state=str(desired_path),
        state_store=f"file://{workdir / 'state.json'}",
        runs_dir=str(workdir / "runs"),
        http_addr=args.http_addr or "127.0.0.1:8080",
        interval="5s",  # validated from text, like a flag
        aws_region=REGION,
        **flags,
    )
    # demo resolution: 10 s metric buckets instead of the ALB's 60 s
    return build_controller(
        settings,
        idle=IdleTuning(metric_period=timedelta(seconds=10), lookback_margin=timedelta(minutes=2)),
    )


async def _serve(
    args: argparse.Namespace,
    controller: Controller,
    workdir: Path,
    emulator: LocalAws,
    simulator_aws: AwsClients,
    stack: DemoStack,
) -> None:
    settings = controller.settings
    runner = await start_http_server(controller, settings.http_host, settings.http_port)
    port = bound_port(runner)
    desired_path = settings.desired_state
    log.info(
        "sandbox ready",
        desired_state=desired_path,
        metrics=f"http://{settings.http_host}:{port}/metrics",
        status=f"http://{settings.http_host}:{port}/status",
        emulator=emulator.endpoint,
        story="traffic -> 30 s of silence -> scale to zero -> a request gets 503 -> wake",
        try_this=f"edit {desired_path}: power: off destroys the demo stack, power: on recreates it",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    simulator = asyncio.create_task(
        run_simulator(simulator_aws, REGION, stack.cluster, stack.service, SystemClock())
    )
    try:
        await controller.run(stop)
    finally:
        simulator.cancel()
        await asyncio.gather(simulator, return_exceptions=True)
        await runner.cleanup()
