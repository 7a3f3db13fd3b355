"""Sending one message to one provider: a Slack incoming webhook, a generic JSON webhook (with
an optional HMAC signature) or an SNS topic. Secrets are read from the environment when the
message is sent, never from the desired state, and never written to a log line or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import aiohttp
from yarl import URL

from controller.core.aws import AwsClients, AwsError
from controller.core.desired_state import Notification
from controller.notifications.messages import Message, event_body, signature, slack_body

SEND_TIMEOUT_SECONDS = 10.0
ANSWER_LIMIT = 64 * 1024  # bytes of a provider's answer read, at most
SIGNATURE_HEADER = "X-Infra-Controller-Signature"
TIMESTAMP_HEADER = "X-Infra-Controller-Timestamp"

Outcome = Literal["failed", "rejected", "misconfigured"]


class DeliveryError(Exception):
    """A message not delivered. `failed`: worth another try (5xx, 429, no connection, a
    timeout); `rejected`: the provider refused it (4xx); `misconfigured`: no usable URL."""

    def __init__(self, outcome: Outcome, problem: str) -> None:
        super().__init__(problem)
        self.outcome = outcome
        self.problem = problem

    @property
    def retry(self) -> bool:
        return self.outcome == "failed"


class Senders:
    """Sends a message to an entry of `notifications`, by its type."""

    def __init__(self, aws: AwsClients | None, environ: Mapping[str, str] = os.environ) -> None:
        self._aws = aws
        self._environ = environ
        self._session: aiohttp.ClientSession | None = None

    async def send(self, entry: Notification, message: Message, now: str) -> None:
        """Raises DeliveryError. `now`: the Unix time the signature covers."""
        if entry.type == "sns":
            await self._publish(entry, message)
        elif entry.type == "slack":
            await self._post(entry, slack_body(message), {})
        else:
            body = event_body(message)
            headers = {}
            if entry.secret_from_env:
                secret = self._environ.get(entry.secret_from_env)
                if not secret:
                    raise DeliveryError(
                        "misconfigured", f"{entry.secret_from_env} (the signing key) is not set"
                    )
                headers = {
                    TIMESTAMP_HEADER: now,
                    SIGNATURE_HEADER: signature(secret, now, body),
                }
            await self._post(entry, body, headers)

    def _url(self, entry: Notification) -> URL:
        variable = entry.url_from_env or ""
        value = self._environ.get(variable, "").strip()
        if not value:
            raise DeliveryError("misconfigured", f"{variable} (the URL) is not set")
        try:
            url = URL(value)
        except (ValueError, TypeError):
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            # never the value itself: it is a secret
            raise DeliveryError("misconfigured", f"{variable} does not hold an http(s) URL")
        return url

    async def _post(self, entry: Notification, body: bytes, headers: dict[str, str]) -> None:
        url = self._url(entry)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS),
                connector=aiohttp.TCPConnector(limit=10),
            )
        try:
            async with self._session.post(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "infra-controller",
                    **headers,
                },
                allow_redirects=False,
            ) as answer:
                await answer.content.read(ANSWER_LIMIT)
                status = answer.status
        except TimeoutError as exc:
            raise DeliveryError("failed", f"no answer within {SEND_TIMEOUT_SECONDS:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # the type only: some aiohttp messages carry the URL, which is a secret
            raise DeliveryError("failed", f"not sent: {type(exc).__name__}") from exc
        except ValueError as exc:  # UnicodeError too: a host name no resolver takes
            raise DeliveryError(
                "misconfigured", f"{entry.url_from_env} holds a URL that cannot be used"
            ) from exc
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            raise DeliveryError("failed", f"the provider answered {status}")
        raise DeliveryError("rejected", f"the provider answered {status}")

    async def _publish(self, entry: Notification, message: Message) -> None:
        if self._aws is None:
            raise DeliveryError("misconfigured", "no AWS access for SNS")
        arn = entry.topic_arn or ""
        try:
            await self._aws.call(
                "sns",
                "Publish",
                arn.split(":")[3],
                TopicArn=arn,
                Subject=message.subject,
                Message=event_body(message).decode(),
            )
        except AwsError as exc:
            throttled = exc.code in ("Throttling", "ThrottlingException", "ThrottledException")
            outcome: Outcome = "rejected" if exc.refused and not throttled else "failed"
            raise DeliveryError(outcome, str(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
