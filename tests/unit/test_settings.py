"""Settings: every flag reads a variable, the flag wins, the AWS SDK's variables are honoured."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from pydantic import ValidationError

from controller.cli import build_parser, settings_from
from controller.core.backoff import ENVIRONMENT_BACKOFF
from controller.core.settings import Settings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.desired_state == "desired_state.yaml"
    assert settings.interval == timedelta(seconds=60)
    assert settings.http_addr == "127.0.0.1:8080"
    assert settings.api_token is None
    assert settings.state_store == "file://.controller-state.json"
    assert settings.dry_run is False
    assert settings.cloudwatch_namespace == "InfraController"


def test_variables_are_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLLER_INTERVAL", "90s")
    monkeypatch.setenv("CONTROLLER_DESIRED_STATE", "from-env.yaml")
    monkeypatch.setenv("CONTROLLER_DRY_RUN", "true")
    args = build_parser().parse_args(["run", "--interval", "5m"])
    settings = settings_from(args)
    assert settings.interval == timedelta(minutes=5)
    assert settings.desired_state == "from-env.yaml"
    assert settings.dry_run is True


def test_aws_region_is_honoured_before_aws_default_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert Settings().aws_region == "eu-west-3"


def test_empty_token_means_the_api_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLLER_API_TOKEN", "")
    assert Settings().api_token is None


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLLER_API_TOKEN", "s3cret-token")
    assert "s3cret-token" not in repr(Settings())


@pytest.mark.parametrize(
    ("key", "value"),
    [("interval", "0s"), ("interval", "soon"), ("http_addr", "8080"), ("log_format", "xml")],
)
def test_invalid_settings_are_refused(key: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({key: value})


def test_backoff_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [ENVIRONMENT_BACKOFF.delay(n, rng).total_seconds() for n in range(1, 12)]
    assert 4.5 <= delays[0] <= 5.5
    assert all(delays[i + 1] > delays[i] for i in range(7))  # then the cap holds it
    assert max(delays) <= 15 * 60 * 1.1
    assert ENVIRONMENT_BACKOFF.delay(0, rng) == timedelta(0)
