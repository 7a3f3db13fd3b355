"""Schedules and temporary overrides end to end: the power in force comes from the override, the
schedule or git; overrides are written before the answer and survive a restart; the earlier
system's /infra/* interface; CORS for the read endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.core.state_store import FileStateStore
from controller.engine.passes import PassReport
from tests.conftest import ApiFactory, Harness, MakeController, fake_terraform_behaviour, pass_until

pytestmark = pytest.mark.integration
TOKEN = "test-token-123"
# a wednesday, 12:00 in Paris: inside office hours
NOON = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
OFFICE = (
    "    schedule:\n      timezone: Europe/Paris\n"
    '      periods: [{days: mon-fri, from: "08:00", to: "20:00"}]\n'
)


def desired(workdir: Path, power: str = "on", schedule: bool = True) -> str:
    return (
        f"version: 1\nenvironments:\n  staging:\n    power: {power}\n    region: eu-west-3\n"
        f"    terraform: {{runner: cli, workdir: {workdir}, timeout: 5m}}\n"
        + (OFFICE if schedule else "")
    )


def power_state(report: PassReport) -> str | None:
    return report.environments["staging"].facts.power_state


async def settle(h: Harness, state: str) -> PassReport:
    return await pass_until(h, lambda report: power_state(report) == state)


async def test_the_schedule_powers_off_at_its_end_and_the_reason_names_it(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    h = api.h
    h.clock.set(NOON)
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").reason.startswith(
        "schedule: on inside mon-fri 08:00-20:00 Europe/Paris until 20:00 Europe/Paris; "
    )
    await settle(h, "RUNNING")
    status = h.status()["environments"]["staging"]
    assert (status["power_source"], status["next_change"]) == ("schedule", "2026-11-25T19:00:00Z")
    assert h.metric("infra_controller_power_desired", environment="staging", source="schedule") == 1
    h.clock.advance(timedelta(hours=8, minutes=1))  # 20:01 in Paris
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_destroy"
    assert "schedule: off outside mon-fri 08:00-20:00" in report.decision("staging", "power").reason
    await settle(h, "STOPPED")


async def test_an_override_is_written_before_the_answer_survives_a_restart_and_expires(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    h = api.h
    h.clock.set(NOON + timedelta(hours=9))  # 21:00 in Paris: the schedule says off
    await settle(h, "STOPPED")
    status, body = await api.post(
        "/environments/staging/power", TOKEN, json={"power": "on", "for": "2h", "reason": "demo"}
    )
    assert status == 202
    assert body["expires_at"] == "2026-11-25T22:00:00Z"
    stored = (await FileStateStore(str(h.state_path)).load()).records["staging"]
    assert stored.overrides.power is not None and stored.overrides.power.reason == "demo"
    await h.controller.close()

    again = await api_factory(desired(quick_terraform), api_token=TOKEN)
    h = again.h
    h.clock.set(NOON + timedelta(hours=9, minutes=1))
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_apply"
    assert report.decision("staging", "power").reason.startswith(
        "override on until 2026-11-25T22:00:00Z (demo); "
    )
    await settle(h, "RUNNING")
    status_body = h.status()["environments"]["staging"]
    assert status_body["power_source"] == "override"
    assert status_body["override"]["expires_at"] == "2026-11-25T22:00:00Z"
    assert (
        h.metric("infra_controller_override_expiry_timestamp_seconds", environment="staging")
        == datetime(2026, 11, 25, 22, 0, tzinfo=UTC).timestamp()
    )
    h.clock.set(NOON + timedelta(hours=11))  # 23:00: expired, the schedule says off again
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_destroy"
    stored = (await FileStateStore(str(h.state_path)).load()).records["staging"]
    assert stored.overrides.power is None


async def test_an_override_without_for_lasts_until_the_schedule_s_next_change(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    h = api.h
    h.clock.set(NOON)
    await settle(h, "RUNNING")
    status, body = await api.post("/environments/staging/power", TOKEN, json={"power": "off"})
    assert (status, body["expires_at"]) == (202, "2026-11-25T19:00:00Z")
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_destroy"
    await settle(h, "STOPPED")
    async with api.session.delete(
        api.base + "/environments/staging/power", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as answer:
        assert answer.status == 204
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_apply"


async def test_a_new_revision_that_changes_power_ends_an_override(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform, schedule=False), api_token=TOKEN)
    h = api.h
    await settle(h, "RUNNING")
    assert (await api.post("/environments/staging/power", TOKEN, json={"power": "off"}))[0] == 202
    await settle(h, "STOPPED")
    assert h.status()["environments"]["staging"]["override"]["expires_at"] is None
    h.write(desired(quick_terraform, power="off", schedule=False))
    await h.controller.reconcile_once()
    assert h.status()["environments"]["staging"]["power_source"] == "git"
    assert h.status()["environments"]["staging"]["override"] is None


async def test_power_overrides_refuse_bad_requests(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    await api.h.controller.reconcile_once()
    path = "/environments/staging/power"
    assert (await api.post(path, json={"power": "on"}))[0] == 401
    assert (await api.post("/environments/nope/power", TOKEN, json={"power": "on"}))[0] == 404
    for body in (
        {"power": "maybe"},
        {"power": "on", "for": "forever"},
        {"power": "on", "for": "10s"},
        {"power": "on", "for": "90d"},
        {"power": "on", "until": "tomorrow"},
        {"power": "on", "reason": ""},
    ):
        status, _ = await api.post(path, TOKEN, json=body)
        assert status == 400, body
    assert api.h.status()["environments"]["staging"]["override"] is None


async def test_the_earlier_interface_starts_stops_and_reports_the_default_environment(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(
        desired(quick_terraform, power="off", schedule=False),
        api_token=TOKEN,
        cors_origins="https://app.example.com",
    )
    h = api.h
    await settle(h, "STOPPED")
    status, body = await api.post("/infra/start", TOKEN)
    assert (status, body) == (
        202,
        {"message": "Infrastructure starting", "status": "STARTING", "estimatedTime": "15 minutes"},
    )
    await settle(h, "RUNNING")
    async with api.session.get(
        api.base + "/infra/status", headers={"Origin": "https://app.example.com"}
    ) as answer:
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        seed = await answer.json()
    assert set(seed) == {"status", "endpoint", "lastUpdate"}
    assert seed["status"] == "RUNNING"
    async with api.session.get(
        api.base + "/infra/status", headers={"Origin": "https://evil.example.net"}
    ) as answer:
        assert "Access-Control-Allow-Origin" not in answer.headers
    status, body = await api.post("/infra/stop", TOKEN)
    assert (status, body["message"], body["status"]) == (202, "Infrastructure stopping", "STOPPING")
    assert (await api.post("/infra/stop"))[0] == 401


async def test_the_schedule_never_destroys_while_an_apply_is_in_flight(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 1.5}, destroy={"seconds": 0.2})
    h = make_controller(desired(fake_terraform))
    h.clock.set(NOON + timedelta(hours=7, minutes=59))  # 19:59 in Paris: on, for a minute
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_apply"
    h.clock.advance(timedelta(minutes=2))  # 20:01: the schedule says off, the apply still runs
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "none"
    assert power_state(report) == "STARTING"
    # the destroy starts in the pass that sees the apply finish, never before
    report = await pass_until(h, lambda r: r.decision("staging", "power").action != "none")
    assert report.decision("staging", "power").action == "terraform_destroy"
    assert "; apply succeeded after" in report.decision("staging", "power").reason


async def test_a_controller_down_across_transitions_converges_to_now_without_replaying(
    make_controller: MakeController, quick_terraform: Path
) -> None:
    h = make_controller(desired(quick_terraform))
    h.clock.set(NOON)
    await settle(h, "RUNNING")
    runs_before = len((quick_terraform / "invocations.log").read_text().splitlines())
    # down from wednesday noon to friday 10:00: two evenings off and two mornings on missed
    h.clock.set(NOON + timedelta(days=2, hours=-2))
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "none"
    assert len((quick_terraform / "invocations.log").read_text().splitlines()) == runs_before
    # down again until saturday: it is off now, so one destroy, nothing else
    h.clock.set(NOON + timedelta(days=3))
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_destroy"


async def test_time_powered_off_is_counted_as_saved_at_the_hourly_cost(
    make_controller: MakeController, quick_terraform: Path
) -> None:
    body = (
        desired(quick_terraform, power="off", schedule=False) + "    cost: {hourly_when_on: 0.12}\n"
    )
    h = make_controller(body)
    h.clock.set(NOON)
    await settle(h, "STOPPED")
    for _ in range(3):
        h.clock.advance(timedelta(minutes=10))
        await h.controller.reconcile_once()
    saved = h.metric(
        "infra_controller_estimated_savings_dollars_total", environment="staging", lever="power"
    )
    assert round(saved, 6) == round(0.5 * 0.12, 6)
    cost = h.status()["environments"]["staging"]["cost"]
    assert cost == {
        "month": "2026-11",
        "hours_on": 0.0,
        "hours_awake": 0.0,
        "estimated_savings_dollars": {"power": 0.06, "idle": None},
    }
    stored = (await FileStateStore(str(h.state_path)).load()).records["staging"]
    assert round(stored.cost.power_savings, 6) == 0.06  # kept across restarts
