"""What the controller knows of one environment between passes (in memory, beside its stored
record): the working copies of its records, its last decisions and results, and its backoff."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from controller.state_store import EnvironmentRecord
from reconcilers.idle_decision import IdleDecision, ServiceState, Wakefulness
from reconcilers.power_decision import PowerDecision, PowerRecord, PowerState

Result = Literal["success", "error", "skipped"]


@dataclass
class EnvironmentRuntime:
    """What the controller knows of one environment between passes."""

    stored: EnvironmentRecord = field(default_factory=EnvironmentRecord)  # as in the store
    wakefulness: Wakefulness = field(default_factory=Wakefulness)
    power_record: PowerRecord = field(default_factory=PowerRecord)
    wake_requested: bool = False
    failures: int = 0
    retry_at: datetime | None = None
    service: ServiceState | None = None
    endpoint: str | None = None
    power: PowerState | None = None
    # lower bound of the last request's time: the start of the first window read if none seen
    last_request_at: datetime | None = None
    last_decision: IdleDecision | None = None
    last_power_decision: PowerDecision | None = None
    last_action: dict[str, Any] | None = None
    last_result: Result | None = None
    last_error: str | None = None
    last_update: datetime | None = None
    result_changed_at: datetime | None = None

    def working_record(self) -> EnvironmentRecord:
        return replace(self.stored, wakefulness=self.wakefulness, power=self.power_record)

    def adopt(self, record: EnvironmentRecord) -> None:
        self.stored = record
        self.wakefulness = record.wakefulness
        self.power_record = record.power
