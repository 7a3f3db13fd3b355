"""`infra-controller sandbox`: the product's embedded default, with no AWS account.

Starts the local AWS emulator, creates the demo stack in it, writes a desired state with short
demo durations, and runs the real controller (loop + HTTP server + activator) against it. What
the emulator only records is played by stand-ins in this process: the demo service's task (the
demo app, registered in its target group while the service runs), its load balancer (a proxy
routing as the emulator's listener says), and visitors making real requests through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import structlog
from pydantic import ValidationError

from controller.activator_server import activator_running
from controller.core.aws import AwsClients
from controller.core.clock import SystemClock
from controller.core.durations import format_duration
from controller.core.settings import Settings, setting_problems
from controller.engine.controller import Controller
from controller.http_api import bound_port, start_http_server
from controller.logging_setup import configure_logging
from controller.sandbox.config import REGION, SandboxConfig, sandbox_settings
from controller.sandbox.demo_stack import (
    DemoStack,
    create_activator_target_group,
    create_demo_stack,
)
from controller.sandbox.emulator import LocalAws, free_port
from controller.sandbox.stand_ins import stand_ins_running, url_host
from controller.sandbox.traffic import run_simulator
from controller.wiring import IdleTuning, build_controller

log = structlog.get_logger("infra_controller.sandbox")

EXIT_OK, EXIT_INVALID = 0, 2
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
      after: {idle_after}         # no request for {idle_after} -> desiredCount 0
      active_count: 1
      wake: on-request    # a request that reaches the activator wakes it at once
      hosts: [localhost, 127.0.0.1]   # the Host a browser or curl sends to the load balancer
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


def _listen_error(addr: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else str(exc)
    return (
        f"infra-controller: cannot listen on {addr}: {reason}; choose another address with "
        '--http-addr HOST:PORT or CONTROLLER_HTTP_ADDR (make sandbox ARGS="--http-addr '
        '127.0.0.1:9090")'
    )


async def _can_listen(host: str, port: int) -> OSError | None:
    """Bound and released at once, before the emulator starts: a busy port fails in a second
    with one line, not after the whole demo has been set up (the real bind still checks)."""
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    except OSError as exc:
        return exc
    server.close()
    await server.wait_closed()
    return None


async def run_sandbox(args: argparse.Namespace) -> int:
    if not emulator_installed():
        print(MISSING_EMULATOR, file=sys.stderr)
        return EXIT_INVALID
    # before the temp dir exists: a SIGTERM or Ctrl-C from then on still ends in its removal
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        workdir = await asyncio.to_thread(_prepare_workdir, args.workdir)
        try:
            return await _run_in(args, workdir, stop)
        finally:
            if args.workdir is None:  # a temp dir of ours: nothing in it outlives the emulator
                await asyncio.to_thread(shutil.rmtree, workdir, True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _run_in(args: argparse.Namespace, workdir: Path, stop: asyncio.Event) -> int:
    try:
        config = sandbox_settings(args, workdir)
    except ValidationError as exc:
        for line in setting_problems(exc, flags=("http_addr", "log_format")):
            print(f"infra-controller: {line}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as exc:  # a sandbox flag
        print(f"infra-controller: {exc}", file=sys.stderr)
        return EXIT_INVALID
    settings = config.settings
    if (problem := await _can_listen(settings.http_host, settings.http_port)) is not None:
        print(_listen_error(settings.http_addr, problem), file=sys.stderr)
        return EXIT_INVALID
    configure_logging(settings.log_format or "console")
    emulator = LocalAws()
    log.info("starting the local AWS emulator", endpoint=emulator.endpoint)
    try:
        await asyncio.to_thread(emulator.start)
        os.environ.update(emulator.environ(REGION))
        os.environ["PATH"] = f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        simulator_aws = AwsClients(REGION)
        try:
            if stop.is_set():
                return EXIT_OK
            (stack,) = await create_demo_stack(simulator_aws, REGION, running=True)
            activator_group = await create_activator_target_group(simulator_aws, REGION)
            if stop.is_set():
                return EXIT_OK
            settings = settings.model_copy(
                update={
                    "activator_addr": f"127.0.0.1:{free_port()}",
                    "activator_target_group": activator_group,
                }
            )
            config = replace(config, settings=settings)
            controller = await _demo_controller(settings, workdir, stack, config.idle_after)
            try:
                return await _serve(args, config, controller, emulator, simulator_aws, stack, stop)
            finally:
                await controller.close()
        finally:
            await simulator_aws.close()
    finally:
        await asyncio.to_thread(emulator.stop)
        kept = {"workdir": str(workdir)} if args.workdir else {"removed": str(workdir)}
        log.info("sandbox stopped", **kept)


async def _demo_controller(
    settings: Settings, workdir: Path, stack: DemoStack, idle_after: timedelta
) -> Controller:
    text = DEMO_DESIRED_STATE.format(
        region=REGION,
        cluster=stack.cluster,
        service=stack.service,
        terraform_workdir=workdir / "infra",
        idle_after=format_duration(idle_after),
    )
    await asyncio.to_thread(Path(settings.desired_state).write_text, text)
    # demo resolution: 10 s metric buckets instead of the ALB's 60 s
    return build_controller(
        settings,
        idle=IdleTuning(metric_period=timedelta(seconds=10), lookback_margin=timedelta(minutes=2)),
    )


def cli_command() -> str:
    """How to call this install's CLI from the directory the sandbox was started in."""
    script = Path(sys.executable).parent / "infra-controller"
    if not script.exists():  # run from a source tree (`python -m controller`)
        return f"{shlex.quote(sys.executable)} -m controller"
    on_path = shutil.which("infra-controller")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "infra-controller"
    try:
        return str(script.relative_to(Path.cwd()))  # `.venv/bin/infra-controller` from a clone
    except ValueError:
        return shlex.quote(str(script))


def try_commands(url: str, token: str | None) -> list[str]:
    """What to try against the sandbox's API, as typed in a shell: with `token` written out
    (one made for this run), or else read from CONTROLLER_API_TOKEN (the user's own)."""
    cli = cli_command()
    # a generated token is URL-safe base64: nothing in it a shell would interpret
    option, header = (
        (token, token) if token else ('"$CONTROLLER_API_TOKEN"', "$CONTROLLER_API_TOKEN")
    )
    return [
        f"{cli} status --url {url}",
        f"{cli} wake demo --url {url} --token {option}",
        f"{cli} reconcile demo --url {url} --token {option}",
        f'curl -X POST -H "Authorization: Bearer {header}" {url}/environments/demo/wake',
    ]


async def _announce_when_ready(
    config: SandboxConfig, controller: Controller, url: str, alb_url: str, emulator: LocalAws
) -> None:
    """`sandbox ready` once the first pass has loaded the desired state: a `wake` from then on
    finds the demo environment."""
    # the controller publishes readiness in its snapshot; there is no event to await
    while controller.ready() is not None:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    settings = config.settings
    assert settings.api_token is not None
    token = settings.api_token.get_secret_value()
    # the token and the commands go to the terminal only, not into a log line that may be kept
    log.info(
        "sandbox ready",
        api=url,
        load_balancer=alb_url,
        desired_state=settings.desired_state,
        emulator=emulator.endpoint,
    )
    if config.token_generated:
        origin = "made for this run (set CONTROLLER_API_TOKEN to choose your own)"
        heading = f"Its API token, {origin}:\n    {token}\n"
    else:
        heading = "Its API token is the one in CONTROLLER_API_TOKEN.\n"
    commands = "".join(
        f"    {line}\n" for line in try_commands(url, token if config.token_generated else None)
    )
    silence = format_duration(config.idle_after)
    print(
        f"\nThe sandbox is ready: the controller answers at {url} (/status, /metrics).\n"
        f"{heading}"
        f"Try, from another terminal:\n{commands}"
        f"The demo service answers behind a stand-in for its load balancer: open {alb_url}\n"
        "in a browser, or curl it. While the service sleeps, the activator answers there.\n"
        f"Watch: traffic -> {silence} of silence -> scale to zero, routes to the activator ->\n"
        "a visitor gets the waiting page and the wake starts at once -> the service answers.\n"
        "Edit the desired state while it runs (suspend: true observes only; power: off\n"
        "destroys the demo stack with a stand-in terraform, power: on recreates it):\n"
        f"    {settings.desired_state}\n",
        flush=True,
    )


async def _serve(
    args: argparse.Namespace,
    config: SandboxConfig,
    controller: Controller,
    emulator: LocalAws,
    simulator_aws: AwsClients,
    stack: DemoStack,
    stop: asyncio.Event,
) -> int:
    settings = config.settings
    try:
        runner = await start_http_server(controller, settings.http_host, settings.http_port)
    except OSError as exc:  # taken since the check at start
        print(_listen_error(settings.http_addr, exc), file=sys.stderr)
        return EXIT_INVALID
    url = f"http://{url_host(settings.http_host)}:{bound_port(runner)}"
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, stop.set)
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(runner.cleanup)
        try:
            activator = await resources.enter_async_context(activator_running(controller, None))
        except OSError as exc:
            print(f"infra-controller: the activator: {exc}", file=sys.stderr)
            return EXIT_INVALID
        assert activator is not None and settings.activator_target_group is not None
        alb_url = await resources.enter_async_context(
            stand_ins_running(
                simulator_aws,
                stack,
                (config.alb_host, config.alb_port),
                (settings.activator_target_group, bound_port(activator)),
            )
        )
        busy = min(20.0, config.idle_after.total_seconds())
        background = [
            asyncio.create_task(
                run_simulator(
                    simulator_aws,
                    REGION,
                    stack.cluster,
                    stack.service,
                    SystemClock(),
                    alb_url,
                    busy_seconds=busy,
                )
            ),
            asyncio.create_task(_announce_when_ready(config, controller, url, alb_url, emulator)),
        ]
        try:
            await controller.run(stop)
        finally:
            for job in background:
                job.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    return EXIT_OK
