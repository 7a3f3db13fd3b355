"""The idle lever's prices: the package's table, ARM below x86, overrides, and task sizes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.core.fargate_prices import PRICES, Architecture, Rate, TaskSize, rate
from controller.core.settings import Settings
from reconcilers.task_sizes import _RuntimePlatform, _TaskDefinition, task_size


def test_arm_costs_a_fifth_less_than_x86_in_every_region_of_the_table() -> None:
    for region, prices in PRICES.items():
        assert prices["arm"].vcpu_hour == pytest.approx(prices["x86"].vcpu_hour * 0.8), region
        assert prices["arm"].gb_hour == pytest.approx(prices["x86"].gb_hour * 0.8), region


def test_an_override_replaces_or_adds_a_region_and_an_unknown_region_has_no_price() -> None:
    mine: dict[str, dict[Architecture, Rate]] = {
        "eu-west-3": {"x86": Rate(1.0, 0.5)},
        "xx-test-1": {"arm": Rate(2.0, 0.0)},
    }
    assert rate("eu-west-3", "x86", mine) == Rate(1.0, 0.5)
    assert rate("eu-west-3", "arm", mine) == PRICES["eu-west-3"]["arm"]
    assert rate("xx-test-1", "arm", mine) == Rate(2.0, 0.0)
    assert rate("xx-test-1", "x86", mine) is None
    assert rate("mars-north-1", "x86") is None


def test_the_price_override_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "CONTROLLER_FARGATE_PRICES", '{"eu-west-3": {"arm": {"vcpu_hour": 0.03, "gb_hour": 0.003}}}'
    )
    assert Settings().fargate_prices == {"eu-west-3": {"arm": Rate(0.03, 0.003)}}


def test_a_task_of_a_quarter_vcpu_and_half_a_gb_at_us_east_1_prices() -> None:
    size = TaskSize(0.25, 0.5, "x86")
    assert size.hourly(2, PRICES["us-east-1"]["x86"]) == pytest.approx(
        2 * (0.25 * 0.04048 + 0.5 * 0.004445)
    )


@pytest.mark.parametrize(
    ("cpu", "memory", "architecture", "expected"),
    [
        ("256", "512", None, TaskSize(0.25, 0.5, "x86")),
        ("1024", "2048", "ARM64", TaskSize(1.0, 2.0, "arm")),
        ("1 vCPU", "2GB", None, None),  # not the units the API answers with
        (None, "512", None, None),  # no task-level size (EC2): no estimate
        ("0", "512", None, None),
        ("99999999", "512", None, None),
    ],
)
def test_a_task_definition_s_size_or_none_when_it_cannot_be_priced(
    cpu: str | None, memory: str | None, architecture: str | None, expected: TaskSize | None
) -> None:
    platform = _RuntimePlatform(cpuArchitecture=architecture) if architecture else None
    definition = _TaskDefinition(cpu=cpu, memory=memory, runtimePlatform=platform)
    assert task_size(definition) == expected


@pytest.mark.parametrize("vcpu_hour", [-0.04, float("inf"), float("nan"), 1e9])
def test_a_price_override_that_is_no_price_is_refused(vcpu_hour: float) -> None:
    with pytest.raises(ValidationError, match="prices are USD per hour"):
        Settings(fargate_prices={"eu-west-3": {"x86": {"vcpu_hour": vcpu_hour, "gb_hour": 0.1}}})
