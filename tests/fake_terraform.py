"""A stand-in for `terraform` that speaks its `-json` output format (the real binary cannot be
installed here), through the same emitter as the sandbox's stand-in. Behaviour per operation
comes from `fake-terraform.json` in the working directory: {"apply": {"exit": 0, "seconds": 0,
"stop_seconds": 0.2, "until": null}, "init": {"exit": 0, "seconds": 0, "until": null}}
(`stop_seconds`: the graceful stop after a SIGINT; `until`: see below). Every invocation is
appended to `invocations.log` (its argv, pid, start time, the names of its environment
variables, and `concurrent`: the pids of the earlier invocations still running when it started,
which must stay empty), every SIGINT received to `sigints.log`."""

import fcntl
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from controller.sandbox.terraform_json import change_summary, diagnostic, emit, hook, version

HERE = os.getcwd()
argv = sys.argv[1:]
command = argv[0] if argv else "help"
config = {}
if os.path.exists("fake-terraform.json"):
    with open("fake-terraform.json") as handle:
        config = json.load(handle).get(command, {})


def still_running(entry: dict[str, Any]) -> bool:
    """An earlier invocation's process is still that invocation (not a zombie, not a reuse)."""
    if entry["pid"] == os.getpid():
        return False  # its pid was reused by this very invocation
    try:
        with open(f"/proc/{entry['pid']}/cmdline", "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except OSError:
        return False
    return os.fsencode(entry["script"]) in cmdline


with open("invocations.log", "a+") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)  # two starting at once each see the other
    handle.seek(0)
    earlier = [json.loads(line) for line in handle.read().splitlines() if line]
    handle.write(
        json.dumps(
            {
                "argv": argv,
                "TF_IN_AUTOMATION": os.environ.get("TF_IN_AUTOMATION"),
                "pid": os.getpid(),
                "script": sys.argv[0],
                "started_at": time.time(),
                "env": sorted(os.environ),  # names only: values may be secrets
                "concurrent": [e["pid"] for e in earlier if still_running(e)],
            }
        )
        + "\n"
    )


interrupted = False


def on_sigint(signum: int, frame: FrameType | None) -> None:
    global interrupted
    with open("sigints.log", "a") as handle:
        handle.write("SIGINT\n")
    interrupted = True


signal.signal(signal.SIGINT, on_sigint)
# `until`: a file name; the command then runs until that file appears (at most `seconds`, 60 by
# default), so a test holds a step open exactly as long as it needs it
release = config.get("until")
deadline = time.monotonic() + float(config.get("seconds", 60 if release else 0))


def busy() -> bool:
    released = release is not None and os.path.exists(release)
    return time.monotonic() < deadline and not interrupted and not released


if command == "init":
    print("Initializing the backend...", flush=True)
    while busy():
        time.sleep(0.05)
    if interrupted:
        sys.exit(1)
    if config.get("exit", 0):
        print("Error: Failed to get existing workspaces", flush=True)
    sys.exit(config.get("exit", 0))

address = {
    "addr": "aws_ecs_service.app",
    "resource_type": "aws_ecs_service",
    "resource_name": "app",
}
action = "create" if command == "apply" else "delete"
version()
emit(
    "planned_change",
    f"aws_ecs_service.app: Plan to {action}",
    change={"resource": address, "action": action},
)
add, remove = (1, 0) if command == "apply" else (0, 1)
change_summary("plan", add, 0, remove)
hook("apply_start", "aws_ecs_service.app: Creating...", address, action)
elapsed = 0
while busy():
    time.sleep(0.05)
    elapsed += 1
    hook(
        "apply_progress",
        f"aws_ecs_service.app: Still creating... [{elapsed}s elapsed]",
        address,
        action,
        elapsed_seconds=elapsed,
    )
if interrupted:
    emit("log", "Interrupt received. Gracefully shutting down...", level="warn")
    time.sleep(float(config.get("stop_seconds", 0.2)))  # a further SIGINT lands in sigints.log
    diagnostic("execution halted")
    sys.exit(1)
code = config.get("exit", 0)
if code:
    hook(
        "apply_errored",
        "aws_ecs_service.app: Creation errored",
        address,
        action,
        elapsed_seconds=elapsed,
    )
    diagnostic(
        "creating ECS Service",
        "AccessDeniedException: not authorized",
        address="aws_ecs_service.app",
    )
    sys.exit(code)
hook(
    "apply_complete",
    "aws_ecs_service.app: Creation complete after 1s",
    address,
    action,
    elapsed_seconds=elapsed,
)
change_summary(command, add, 0, remove)
sys.exit(0)
