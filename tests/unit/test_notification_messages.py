"""What notifications say and to whom: categories, filters, grouping, SNS subjects, and the
`notifications` section of the desired state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from controller.core.desired_state import DesiredState, Notification
from controller.core.events import StampedEvent
from controller.notifications.messages import (
    GROUP_ABOVE,
    categories,
    compose,
    event_body,
    signature,
    wanted,
)

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ARN = "arn:aws:sns:eu-west-3:123456789012:ops"


def event(kind: str, environment: str | None = "staging", **more: Any) -> StampedEvent:
    return StampedEvent(time=AT, environment=environment, kind=kind, reason="why", **more)


def entry(**fields: Any) -> Notification:
    return Notification.model_validate(
        {"name": "chat", "type": "slack", "url_from_env": "CHAT_URL", **fields}
    )


def test_each_kind_has_its_category_and_failures_are_errors_too() -> None:
    assert categories(event("run_started")) == {"power"}
    assert categories(event("scaled_to_zero")) == {"idle"}
    assert categories(event("woken")) == {"wake"}
    assert categories(event("override_set")) == {"override"}
    assert categories(event("desired_state_valid", None)) == {"desired_state"}
    assert categories(event("run_failed", severity="error")) == {"power", "error"}
    assert categories(event("power_state_changed", to_state="ERROR")) == {"power", "error"}


def test_an_entry_takes_every_event_by_default() -> None:
    assert all(wanted(entry(), event(k)) for k in ("run_started", "woken", "suspended"))


def test_an_environment_filter_keeps_events_of_the_desired_state_itself() -> None:
    only = entry(environments=["staging"])
    assert wanted(only, event("woken"))
    assert not wanted(only, event("woken", "prod"))
    assert wanted(only, event("desired_state_invalid", None))


def test_up_to_three_events_are_one_message_each_more_are_one_summary() -> None:
    few = [event("woken", f"env-{i}") for i in range(GROUP_ABOVE)]
    assert [m.text for m in compose(few)] == [f"[env-{i}] woken: why" for i in range(3)]
    (summary,) = compose([*few, event("scaled_to_zero", "env-9")])
    assert summary.text.split("\n")[0] == "4 events in 4 environments: 3 woken, 1 scaled_to_zero"
    assert len(summary.events) == 4
    assert compose([]) == []


def test_an_sns_subject_is_one_ascii_line_of_at_most_100_characters() -> None:
    long = StampedEvent(time=AT, environment="é" * 10, kind="run_failed", reason="x\n" * 200)
    (message,) = compose([long])
    assert len(message.subject) <= 100 and "\n" not in message.subject
    assert message.subject.isascii() and message.subject.endswith("...")


def test_a_body_carries_at_most_a_hundred_events_and_says_how_many_it_left_out() -> None:
    (summary,) = compose([event("woken", f"env-{i}") for i in range(150)])
    assert b'"omitted":50' in event_body(summary)


def test_the_signature_covers_the_timestamp_and_the_body() -> None:
    first = signature("key", "1700000000", b"{}")
    assert first.startswith("sha256=") and len(first) == 7 + 64
    assert first != signature("key", "1700000001", b"{}")
    assert first != signature("key", "1700000000", b"{ }")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url_from_env": None}, "type slack needs `url_from_env`"),
        ({"type": "sns", "url_from_env": None}, "type sns needs `topic_arn`"),
        ({"topic_arn": ARN}, "`topic_arn` is for type sns"),
        ({"secret_from_env": "KEY"}, "`secret_from_env` (the HMAC signature) is for type webhook"),
        ({"url_from_env": "CONTROLLER_API_TOKEN"}, "one of the controller's own variables"),
        ({"url_from_env": "AWS_SECRET_ACCESS_KEY"}, "one of the controller's own variables"),
        ({"url_from_env": "https://hooks.example.com/x"}, "should match pattern"),
        ({"events": ["power", "everything"]}, "Input should be"),
        ({"events": []}, "at least 1 item"),
        ({"type": "email"}, "Input should be"),
    ],
)
def test_an_entry_without_what_its_type_needs_is_invalid(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        entry(**fields)


def test_entries_have_distinct_names_and_name_known_environments() -> None:
    base = {"version": 1, "environments": {"staging": {"power": "on"}}}
    chat = {"name": "chat", "type": "slack", "url_from_env": "CHAT_URL"}
    with pytest.raises(ValidationError, match="two entries are named chat"):
        DesiredState.model_validate({**base, "notifications": [chat, chat]})
    with pytest.raises(ValidationError, match="names unknown environments: prod"):
        DesiredState.model_validate({**base, "notifications": [{**chat, "environments": ["prod"]}]})
    sns = {"name": "topic", "type": "sns", "topic_arn": ARN}
    desired = DesiredState.model_validate({**base, "notifications": [chat, sns]})
    assert [n.name for n in desired.notifications] == ["chat", "topic"]
