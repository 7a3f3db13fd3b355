"""Fargate on-demand prices (Linux) for the idle lever's estimate, USD per hour.

Approximate list prices of the main regions; ARM (Graviton) is 20 % below x86, as AWS prices
it. `CONTROLLER_FARGATE_PRICES` replaces or adds regions (the README shows the shape). A region
missing from both gives no estimate: nothing is claimed that is not priced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Architecture = Literal["x86", "arm"]
ARM_DISCOUNT = 0.8


@dataclass(frozen=True)
class Rate:
    vcpu_hour: float
    gb_hour: float


# x86 per vCPU-hour, per GB-hour
_X86: dict[str, tuple[float, float]] = {
    "us-east-1": (0.04048, 0.004445),
    "us-east-2": (0.04048, 0.004445),
    "us-west-1": (0.04656, 0.00511),
    "us-west-2": (0.04048, 0.004445),
    "ca-central-1": (0.04456, 0.004865),
    "eu-west-1": (0.04048, 0.004445),
    "eu-west-2": (0.04656, 0.00511),
    "eu-west-3": (0.04656, 0.00511),
    "eu-central-1": (0.04656, 0.00511),
    "eu-north-1": (0.04241, 0.004657),
    "eu-south-1": (0.04656, 0.00511),
    "ap-south-1": (0.04256, 0.004655),
    "ap-southeast-1": (0.05056, 0.00553),
    "ap-southeast-2": (0.04856, 0.00532),
    "ap-northeast-1": (0.05056, 0.00553),
    "ap-northeast-2": (0.04656, 0.00511),
    "sa-east-1": (0.0696, 0.0076),
}

PRICES: dict[str, dict[Architecture, Rate]] = {
    region: {
        "x86": Rate(vcpu, gb),
        "arm": Rate(vcpu * ARM_DISCOUNT, gb * ARM_DISCOUNT),
    }
    for region, (vcpu, gb) in _X86.items()
}


@dataclass(frozen=True)
class TaskSize:
    """A task definition's size, as Fargate bills it."""

    vcpu: float
    memory_gb: float
    architecture: Architecture

    def hourly(self, tasks: int, price: Rate) -> float:
        return tasks * (self.vcpu * price.vcpu_hour + self.memory_gb * price.gb_hour)


def rate(
    region: str,
    architecture: Architecture,
    overrides: dict[str, dict[Architecture, Rate]] | None = None,
) -> Rate | None:
    """The price of `region` (overrides first), or None when it is not known."""
    for table in (overrides or {}, PRICES):
        found = table.get(region, {}).get(architecture)
        if found is not None:
            return found
    return None
