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

from controller.core.aws import AwsClients
from controller.sandbox import terraform_json
from controller.sandbox.demo_stack import create_demo_stack, delete_demo_stack, find_demo_stack


async def _converge(command: str, config: dict[str, Any]) -> None:
    region, name = config["region"], config.get("name", "demo")
    aws = AwsClients(region)
    try:
        exists = await find_demo_stack(aws, region, f"{name}-cluster", f"{name}-service")
        if command == "apply" and exists is None:
            await create_demo_stack(aws, region, name=name, running=True)
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
    terraform_json.version(" (sandbox stand-in)")
    terraform_json.change_summary("plan", add, 0, remove)
    terraform_json.hook("apply_start", f"{address['addr']}: {action}...", address, action)
    seconds = int(config.get("seconds", 6))
    for elapsed in range(1, seconds + 1):  # a real apply takes ~15 min: the demo, a few seconds
        time.sleep(1)
        terraform_json.hook(
            "apply_progress",
            f"{address['addr']}: Still {action}ing... [{elapsed}s elapsed]",
            address,
            action,
            elapsed_seconds=elapsed,
        )
    asyncio.run(_converge(command, config))
    terraform_json.hook(
        "apply_complete",
        f"{address['addr']}: {action} complete",
        address,
        action,
        elapsed_seconds=seconds,
    )
    terraform_json.change_summary(command, add, 0, remove)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
