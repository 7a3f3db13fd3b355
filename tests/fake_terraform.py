"""A stand-in for `terraform` that speaks its `-json` output format (the real binary cannot be
installed here), through the same emitter as the sandbox's stand-in. Behaviour per operation
comes from `fake-terraform.json` in the working directory: {"apply": {"exit": 0, "seconds": 0},
"init": {"exit": 0}}. Every invocation is appended to `invocations.log`, every SIGINT received
to `sigints.log`."""

import json
import os
import signal
import sys
import time
from types import FrameType

from controller.sandbox.terraform_json import change_summary, diagnostic, emit, hook, version

HERE = os.getcwd()
argv = sys.argv[1:]
command = argv[0] if argv else "help"
config = {}
if os.path.exists("fake-terraform.json"):
    with open("fake-terraform.json") as handle:
        config = json.load(handle).get(command, {})
with open("invocations.log", "a") as handle:
    handle.write(
        json.dumps(
            {
                "argv": argv,
                "TF_IN_AUTOMATION": os.environ.get("TF_IN_AUTOMATION"),
                "pid": os.getpid(),
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

if command == "init":
    print("Initializing the backend...", flush=True)
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
deadline = time.monotonic() + float(config.get("seconds", 0))
elapsed = 0
while time.monotonic() < deadline and not interrupted:
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
    time.sleep(0.2)
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
