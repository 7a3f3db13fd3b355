"""The sandbox's stand-in for `terraform`: `apply` creates the demo stack in the local emulator,
`destroy` deletes it, and both speak Terraform's `-json` output format, so the controller's cli
runner drives it exactly as it drives the real binary. Settings come from `sandbox-stack.json`
in the working directory: {"region": ..., "name": "demo", "seconds": 6}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from controller.aws import AwsClients
from controller.demo_stack import create_demo_stack, delete_demo_stack, find_demo_stack
from controller.metrics import ControllerMetrics


def _emit(kind: str, message: str, level: str = "info", **fields: Any) -> None:
    record = {
        "@level": level,
        "@message": message,
        "@module": "terraform.ui",
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "type": kind,
        **fields,
    }
    print(json.dumps(record), flush=True)


async def _converge(command: str, config: dict[str, Any]) -> None:
    region, name = config["region"], config.get("name", "demo")
    aws = AwsClients(ControllerMetrics(), region)
    try:
        exists = await find_demo_stack(aws, region, f"{name}-cluster", f"{name}-service")
        if command == "apply" and exists is None:
            await create_demo_stack(aws, region, name=name)
        elif command == "destroy":
            await delete_demo_stack(aws, region, name=name)
    finally:
        await aws.close()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "init":
        print("Terraform has been successfully initialized! (sandbox stand-in)", flush=True)
        return 0
    if command not in ("apply", "destroy"):
        print(f"the sandbox stand-in only knows init, apply and destroy, not {command!r}")
        return 1
    with open("sandbox-stack.json") as handle:
        config = json.load(handle)
    address = {"addr": "module.demo.aws_ecs_service.app", "resource_type": "aws_ecs_service"}
    action = "create" if command == "apply" else "delete"
    add, remove = (6, 0) if command == "apply" else (0, 6)
    _emit("version", "Terraform 1.9.8 (sandbox stand-in)", terraform="1.9.8", ui="1.2")
    _emit(
        "change_summary",
        f"Plan: {add} to add, 0 to change, {remove} to destroy.",
        changes={"add": add, "change": 0, "import": 0, "remove": remove, "operation": "plan"},
    )
    _emit(
        "apply_start",
        f"{address['addr']}: {action}...",
        hook={"resource": address, "action": action},
    )
    seconds = int(config.get("seconds", 6))
    for elapsed in range(1, seconds + 1):  # a real apply takes ~15 min: the demo, a few seconds
        time.sleep(1)
        _emit(
            "apply_progress",
            f"{address['addr']}: Still {action}ing... [{elapsed}s elapsed]",
            hook={"resource": address, "action": action, "elapsed_seconds": elapsed},
        )
    asyncio.run(_converge(command, config))
    _emit(
        "apply_complete",
        f"{address['addr']}: {action} complete",
        hook={"resource": address, "action": action, "elapsed_seconds": seconds},
    )
    verb = "Apply" if command == "apply" else "Destroy"
    _emit(
        "change_summary",
        f"{verb} complete! Resources: {add} added, 0 changed, {remove} destroyed.",
        changes={"add": add, "change": 0, "import": 0, "remove": remove, "operation": command},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
