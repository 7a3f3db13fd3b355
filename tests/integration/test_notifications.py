"""Notifications (contract section 11) against local HTTP receivers on 127.0.0.1 and the
emulator's SNS: the Slack and webhook shapes, the HMAC signature, retries, the drop after an
hour, grouping, problems reported once per revision, and a pass that is never held up."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from controller.core.aws import AwsClients
from controller.core.clock import ManualClock
from controller.core.desired_state import DesiredState
from controller.core.events import StampedEvent
from controller.notifications.delivery import Notifier
from controller.notifications.messages import signature
from controller.notifications.senders import SIGNATURE_HEADER, TIMESTAMP_HEADER, Senders
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import REGION, MakeController

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A provider on 127.0.0.1: answers with the statuses scripted, then 200."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def handle(request: web.Request) -> web.Response:
        found.received.append((dict(request.headers), await request.read()))
        if found.hang:
            await found.release.wait()
        return web.Response(status=found.answers.pop(0) if found.answers else 200)

    app = web.Application()
    app.router.add_post("/hook/{secret}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hook/T000-secret-part"
    yield found
    found.release.set()
    await runner.cleanup()


def notifications(*entries: str, environments: str = "staging, other") -> DesiredState:
    names = [e.strip() for e in environments.split(",")]
    return DesiredState.model_validate(
        {
            "version": 1,
            "environments": {name: {"power": "on"} for name in names},
            "notifications": [json.loads(entry) for entry in entries],
        }
    )


def event(kind: str, environment: str | None = "staging", **more: Any) -> StampedEvent:
    return StampedEvent(time=START, environment=environment, kind=kind, reason="why", **more)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@dataclass
class Counted:
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)

    def __call__(self, name: str, outcome: str) -> None:
        key = (name, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def reached(
        self, name: str, outcome: str, times: int, or_dropped: bool = False
    ) -> Callable[[], bool]:
        return lambda: (
            self.outcomes.get((name, outcome), 0) >= times
            or (or_dropped and (name, "dropped") in self.outcomes)
        )


def notifier(
    environ: dict[str, str], clock: ManualClock, count: Counted, aws: AwsClients | None = None
) -> Notifier:
    return Notifier(Senders(aws, environ), clock, count, first_retry=2.0)


SLACK = '{"name": "chat", "type": "slack", "url_from_env": "CHAT_URL"}'
SIGNED = (
    '{"name": "ops", "type": "webhook", "url_from_env": "OPS_URL", "secret_from_env": "OPS_KEY"}'
)


async def test_slack_gets_one_text_message_per_event(receiver: Receiver) -> None:
    count = Counted()
    sender = notifier({"CHAT_URL": receiver.url}, ManualClock(START), count)
    sender.publish(
        [event("scaled_to_zero"), event("power_state_changed", from_state="A", to_state="B")],
        notifications(SLACK),
        "rev1",
    )
    await eventually(lambda: len(receiver.received) == 2)
    assert receiver.bodies() == [
        {"text": "[staging] scaled_to_zero: why"},
        {"text": "[staging] power_state_changed A -> B: why"},
    ]
    await sender.close()
    assert count.outcomes == {("chat", "sent"): 2}


async def test_a_webhook_is_signed_with_the_secret_over_timestamp_and_body(
    receiver: Receiver,
) -> None:
    environ = {"OPS_URL": receiver.url, "OPS_KEY": "s3cret"}
    sender = notifier(environ, ManualClock(START), Counted())
    woken = event("woken", attributes={"source": "activator"})
    sender.publish([woken], notifications(SIGNED), "rev1")
    await eventually(lambda: len(receiver.received) == 1)
    headers, body = receiver.received[0]
    assert headers[TIMESTAMP_HEADER] == str(int(START.timestamp()))
    assert headers[SIGNATURE_HEADER] == signature("s3cret", headers[TIMESTAMP_HEADER], body)
    assert headers[SIGNATURE_HEADER] != signature("other", headers[TIMESTAMP_HEADER], body)
    sent = json.loads(body)
    assert sent["text"] == "[staging] woken: why" and sent["omitted"] == 0
    assert sent["events"][0]["kind"] == "woken" and sent["events"][0]["environment"] == "staging"
    await sender.close()


async def test_a_pass_of_fifty_events_sends_one_summary(receiver: Receiver) -> None:
    webhook = '{"name": "ops", "type": "webhook", "url_from_env": "OPS_URL"}'
    sender = notifier({"OPS_URL": receiver.url}, ManualClock(START), Counted())
    many = [event("scaled_to_zero", f"env-{i}") for i in range(48)] + [
        event("woken", "env-1"),
        event("woken", "env-2"),
    ]
    sender.publish(many, notifications(webhook), "rev1")
    await eventually(lambda: len(receiver.received) == 1)
    await asyncio.sleep(0.05)
    (sent,) = receiver.bodies()
    headline, *lines = sent["text"].split("\n")
    assert headline == "50 events in 48 environments: 48 scaled_to_zero, 2 woken"
    assert lines[-1] == "... and 40 more" and len(lines) == 11
    assert len(sent["events"]) == 50
    await sender.close()


async def test_filters_pick_events_by_category_and_environment(receiver: Receiver) -> None:
    entry = (
        '{"name": "chat", "type": "slack", "url_from_env": "CHAT_URL",'
        ' "events": ["error", "desired_state"], "environments": ["staging"]}'
    )
    sender = notifier({"CHAT_URL": receiver.url}, ManualClock(START), Counted())
    sender.publish(
        [
            event("scaled_to_zero"),  # idle: not wanted
            event("run_failed", severity="error"),  # error in staging: sent
            event("run_failed", "other", severity="error"),  # another environment
            event("desired_state_invalid", None, severity="error"),  # no environment: sent
        ],
        notifications(entry),
        "rev1",
    )
    await eventually(lambda: len(receiver.received) == 2)
    await asyncio.sleep(0.05)
    assert [b["text"] for b in receiver.bodies()] == [
        "[staging] run_failed: why",
        "[desired state] desired_state_invalid: why",
    ]
    await sender.close()


async def test_a_failing_provider_is_retried_with_backoff_until_it_answers(
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 503, 429]
    clock, count = ManualClock(START), Counted()
    sender = notifier({"CHAT_URL": receiver.url}, clock, count)
    sender.publish([event("scaled_to_zero")], notifications(SLACK), "rev1")
    for attempts in (1, 2, 3):
        # counted just before the worker sleeps: the clock moves only once it waits
        await eventually(count.reached("chat", "failed", attempts))
        await asyncio.sleep(0.02)
        assert len(receiver.received) == attempts  # nothing more until the backoff is over
        clock.advance(timedelta(seconds=2 ** (attempts + 1)))
    await eventually(lambda: count.outcomes.get(("chat", "sent")) == 1)
    assert count.outcomes == {("chat", "failed"): 3, ("chat", "sent"): 1}
    await sender.close()


async def test_a_message_is_dropped_and_counted_after_an_hour_of_failures(
    receiver: Receiver, logs: Any
) -> None:
    receiver.answers = [500] * 1000
    clock, count = ManualClock(START), Counted()
    sender = notifier({"CHAT_URL": receiver.url}, clock, count)
    sender.publish([event("scaled_to_zero")], notifications(SLACK), "rev1")
    while count.outcomes.get(("chat", "dropped")) is None:
        failed = count.outcomes.get(("chat", "failed"), 0)
        await eventually(count.reached("chat", "failed", failed + 1, or_dropped=True))
        clock.advance(timedelta(minutes=6, seconds=30))  # beyond the longest backoff (jittered)
    assert clock.now() - START <= timedelta(hours=1, minutes=7)
    assert count.outcomes[("chat", "dropped")] == 1
    # backoff 2 s doubling to 5 min: about 20 attempts in the hour, not one a pass
    assert 10 <= count.outcomes[("chat", "failed")] <= 25
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    retrying = [x for x in lines if x["event"] == "notification not delivered; retrying"]
    assert len(retrying) == 1  # reported once for the revision, not at each attempt
    assert any(x["event"] == "notification dropped after an hour of retries" for x in lines)
    assert "T000-secret-part" not in logs.getvalue()
    await sender.close()


async def test_a_refusal_or_a_missing_url_is_reported_once_per_revision_and_not_retried(
    receiver: Receiver, logs: Any
) -> None:
    receiver.answers = [404] * 10
    count = Counted()
    broken = '{"name": "broken", "type": "slack", "url_from_env": "UNSET_URL"}'
    desired = notifications(SLACK, broken)
    sender = notifier({"CHAT_URL": receiver.url}, ManualClock(START), count)
    for revision in ("rev1", "rev1", "rev2"):
        sender.publish([event("scaled_to_zero")], desired, revision)
    await eventually(lambda: count.outcomes.get(("chat", "rejected")) == 3)
    await eventually(lambda: count.outcomes.get(("broken", "misconfigured")) == 3)
    assert len(receiver.received) == 3  # one attempt each: a 4xx is not retried
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    reported = [(x["notification"], x["revision"], x["problem"]) for x in lines if "problem" in x]
    assert sorted(reported) == [
        ("broken", "rev1", "UNSET_URL (the URL) is not set"),
        ("broken", "rev2", "UNSET_URL (the URL) is not set"),
        ("chat", "rev1", "the provider answered 404"),
        ("chat", "rev2", "the provider answered 404"),
    ]
    await sender.close()


async def test_a_hanging_provider_never_holds_up_publishing(receiver: Receiver) -> None:
    receiver.hang = True
    count = Counted()
    sender = Notifier(
        Senders(None, {"CHAT_URL": receiver.url}), ManualClock(START), count, queue_size=5
    )
    started = time.monotonic()
    for _ in range(10):  # ten passes while the first message hangs
        sender.publish([event("scaled_to_zero")], notifications(SLACK), "rev1")
    assert time.monotonic() - started < 0.5
    await eventually(lambda: len(receiver.received) == 1)
    assert count.outcomes == {("chat", "dropped"): 5}  # 5 queued, then 1 of them being sent
    await sender.close(grace=0.1)
    assert count.outcomes == {("chat", "dropped"): 10}  # the rest, at shutdown


async def test_sns_topics_get_the_event_json_with_a_subject(seed_aws: AwsClients) -> None:
    topic = (await seed_aws.call("sns", "CreateTopic", REGION, Name="ops"))["TopicArn"]
    queue = (await seed_aws.call("sqs", "CreateQueue", REGION, QueueName="ops"))["QueueUrl"]
    queue_arn = (
        await seed_aws.call(
            "sqs", "GetQueueAttributes", REGION, QueueUrl=queue, AttributeNames=["QueueArn"]
        )
    )["Attributes"]["QueueArn"]
    await seed_aws.call(
        "sns", "Subscribe", REGION, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn
    )
    count = Counted()
    aws = AwsClients(REGION)
    sender = notifier({}, ManualClock(START), count, aws)
    entry = json.dumps({"name": "topic", "type": "sns", "topic_arn": topic})
    sender.publish([event("run_failed", severity="error")], notifications(entry), "rev1")
    await eventually(lambda: count.outcomes.get(("topic", "sent")) == 1)
    answer = await seed_aws.call("sqs", "ReceiveMessage", REGION, QueueUrl=queue)
    envelope = json.loads(answer["Messages"][0]["Body"])
    assert envelope["Subject"] == "infra-controller: [staging] run_failed: why"
    assert json.loads(envelope["Message"])["events"][0]["kind"] == "run_failed"
    missing = json.dumps({"name": "gone", "type": "sns", "topic_arn": topic + "-deleted"})
    sender.publish([event("run_failed")], notifications(missing), "rev1")
    await eventually(lambda: count.outcomes.get(("gone", "rejected")) == 1)
    await sender.close()
    await aws.close()


async def test_a_pass_that_scales_a_service_to_zero_notifies_the_team(
    make_controller: MakeController,
    stack: DemoStack,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHAT_URL", receiver.url)
    h = make_controller(
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m}\n"
        "notifications:\n  - {name: chat, type: slack, url_from_env: CHAT_URL, events: [idle]}\n"
    )
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    started = time.monotonic()
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert time.monotonic() - started < 5
    await eventually(lambda: len(receiver.received) == 1)
    (text,) = [b["text"] for b in receiver.bodies()]
    assert text.startswith("[demo] scaled_to_zero: no requests for")
    sent = {"name": "chat", "outcome": "sent"}
    registry = h.controller.metrics.registry
    await eventually(
        lambda: registry.get_sample_value("infra_controller_notifications_total", sent) == 1
    )


async def test_a_url_with_a_host_no_resolver_takes_is_misconfigured_and_the_worker_goes_on(
    receiver: Receiver,
) -> None:
    count = Counted()
    environ = {"CHAT_URL": "https://hooks..example.com/T000", "OPS_URL": receiver.url}
    sender = notifier(environ, ManualClock(START), count)
    ops = '{"name": "ops", "type": "webhook", "url_from_env": "OPS_URL"}'
    for _ in range(2):
        sender.publish([event("scaled_to_zero")], notifications(SLACK, ops), "rev1")
    await eventually(count.reached("chat", "misconfigured", 2))
    await eventually(count.reached("ops", "sent", 2))
    started = time.monotonic()
    await sender.close()
    assert time.monotonic() - started < 1  # nothing left waiting in a dead worker's queue
