"""A stand-in for `terraform` that speaks its `-json` output format (the real binary cannot be
installed here). Behaviour per operation comes from `fake-terraform.json` in the working
directory: {"apply": {"exit": 0, "seconds": 0}, "init": {"exit": 0}}. Every invocation is appended
to `invocations.log`, every SIGINT received to `sigints.log`."""

import json
import os
import signal
import sys
import time

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


def emit(kind, message, level="info", **fields):
    record = {
        "@level": level,
        "@message": message,
        "@module": "terraform.ui",
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "type": kind,
        **fields,
    }
    print(json.dumps(record), flush=True)


interrupted = False


def on_sigint(signum, frame):
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
emit("version", "Terraform 1.9.8", terraform="1.9.8", ui="1.2")
emit(
    "planned_change",
    f"aws_ecs_service.app: Plan to {action}",
    change={"resource": address, "action": action},
)
add, remove = (1, 0) if command == "apply" else (0, 1)
emit(
    "change_summary",
    f"Plan: {add} to add, 0 to change, {remove} to destroy.",
    changes={"add": add, "change": 0, "import": 0, "remove": remove, "operation": "plan"},
)
emit(
    "apply_start", "aws_ecs_service.app: Creating...", hook={"resource": address, "action": action}
)
deadline = time.monotonic() + float(config.get("seconds", 0))
elapsed = 0
while time.monotonic() < deadline and not interrupted:
    time.sleep(0.05)
    elapsed += 1
    emit(
        "apply_progress",
        f"aws_ecs_service.app: Still creating... [{elapsed}s elapsed]",
        hook={"resource": address, "action": action, "elapsed_seconds": elapsed},
    )
if interrupted:
    emit("log", "Interrupt received. Gracefully shutting down...", level="warn")
    time.sleep(0.2)
    emit(
        "diagnostic",
        "Error: execution halted",
        level="error",
        diagnostic={"severity": "error", "summary": "execution halted", "detail": ""},
    )
    sys.exit(1)
code = config.get("exit", 0)
if code:
    emit(
        "apply_errored",
        "aws_ecs_service.app: Creation errored",
        level="error",
        hook={"resource": address, "action": action, "elapsed_seconds": elapsed},
    )
    emit(
        "diagnostic",
        "Error: creating ECS Service: AccessDeniedException",
        level="error",
        diagnostic={
            "severity": "error",
            "summary": "creating ECS Service",
            "detail": "AccessDeniedException: not authorized",
            "address": "aws_ecs_service.app",
        },
    )
    sys.exit(code)
emit(
    "apply_complete",
    "aws_ecs_service.app: Creation complete after 1s",
    hook={"resource": address, "action": action, "elapsed_seconds": elapsed},
)
emit(
    "change_summary",
    f"Apply complete! Resources: {add} added, 0 changed, {remove} destroyed.",
    changes={"add": add, "change": 0, "import": 0, "remove": remove, "operation": command},
)
sys.exit(0)
