"""What a notification says: which events an entry of `notifications` wants, and the message
each provider receives. Pure functions; the delivery lives in `delivery.py`.

One message per event; when more than `GROUP_ABOVE` events of one pass go to one entry, a
single summary instead (a pass that scales fifty services sends one message, not fifty).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.desired_state import Notification
from controller.core.events import StampedEvent

GROUP_ABOVE = 3  # events of one pass for one entry; more become one summary
LINES_IN_SUMMARY = 10
EVENTS_IN_BODY = 100  # a webhook or SNS body carries at most this many events
SNS_SUBJECT_LIMIT = 100  # characters, ASCII, no line breaks (SNS's own limit)

_CATEGORY_OF_KIND = {
    "power_state_changed": "power",
    "run_started": "power",
    "run_succeeded": "power",
    "run_failed": "power",
    "run_not_started": "power",
    "run_unconfirmed": "power",
    "scaled_to_zero": "idle",
    "traffic_switched": "idle",
    "woken": "wake",
    "wake_completed": "wake",
    "suspended": "override",
    "resumed": "override",
    "override_set": "override",
    "override_cleared": "override",
    "override_ended": "override",
    "desired_state_invalid": "desired_state",
    "desired_state_valid": "desired_state",
}


def categories(event: StampedEvent) -> set[str]:
    """The categories an event belongs to: its kind's, and `error` when something failed."""
    found = {_CATEGORY_OF_KIND.get(event.kind, "other")}
    if event.severity in ("error", "warning") or event.to_state == "ERROR":
        found.add("error")
    return found


def wanted(entry: Notification, event: StampedEvent) -> bool:
    """`events` filters by category; `environments` filters events of an environment (an
    event of the desired state itself, which has none, goes to every entry that wants it)."""
    if not categories(event) & set(entry.events):
        return False
    return not entry.environments or event.environment in (None, *entry.environments)


@dataclass(frozen=True)
class Message:
    """One notification to one entry: a text for people, the events for programs."""

    text: str
    subject: str
    events: tuple[StampedEvent, ...]


def line(event: StampedEvent) -> str:
    where = event.environment or "desired state"
    change = f" {event.from_state} -> {event.to_state}" if event.to_state else ""
    return f"[{where}] {event.kind}{change}: {event.reason}"


def compose(events: Sequence[StampedEvent]) -> list[Message]:
    """The messages for one entry's events of one pass, oldest first."""
    if not events:
        return []
    if len(events) <= GROUP_ABOVE:
        return [Message(line(e), _subject(line(e)), (e,)) for e in events]
    counts = Counter(e.kind for e in events)
    environments = {e.environment for e in events if e.environment}
    headline = f"{len(events)} events in {len(environments)} environments: " + ", ".join(
        f"{n} {kind}" for kind, n in counts.most_common()
    )
    lines = [line(e) for e in events[:LINES_IN_SUMMARY]]
    if len(events) > LINES_IN_SUMMARY:
        lines.append(f"... and {len(events) - LINES_IN_SUMMARY} more")
    return [Message("\n".join([headline, *lines]), _subject(headline), tuple(events))]


def _subject(text: str) -> str:
    plain = " ".join(text.encode("ascii", "replace").decode().split())
    subject = f"infra-controller: {plain}"
    if len(subject) > SNS_SUBJECT_LIMIT:
        subject = subject[: SNS_SUBJECT_LIMIT - 3] + "..."
    return subject


def slack_body(message: Message) -> bytes:
    """A Slack incoming webhook's JSON: the text, in a code-free plain layout."""
    return json.dumps({"text": message.text}).encode()


def event_body(message: Message) -> bytes:
    """The generic webhook's and SNS's JSON: the text and the events as `/events` shows them."""
    shown = message.events[:EVENTS_IN_BODY]
    body: dict[str, Any] = {
        "text": message.text,
        "events": [e.to_json() for e in shown],
        "omitted": len(message.events) - len(shown),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 of `timestamp.body` with the entry's secret: the receiver checks both, so an
    old message replayed with its signature is refused by its timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()
