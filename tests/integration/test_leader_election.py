"""Leader election (contract section 12) on one table in the emulator: the lease's rules with a
controlled clock, the fence on every write, and two real controller processes (SIGKILL and
SIGSTOP of the leader)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.core.aws import AwsClients
from controller.core.dynamodb_store import DynamoDbStateStore, NotLeader
from controller.core.events import StampedEvent
from controller.core.lease import DynamoDbLease, LeaseRecord, lease_key
from controller.core.records import EnvironmentRecord
from controller.core.state_store import StoreConflict
from controller.engine.event_log import EventLog
from controller.engine.leadership import LEASE_SECONDS, Leadership
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.emulator import free_port
from tests.conftest import REGION, MakeController, create_state_table
from tests.processes import ROOT, start_daemon
from tests.waiting import until

pytestmark = pytest.mark.integration
TABLE = "infra-controller"


@dataclass
class Monotonic:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def candidate(aws: AwsClients, clock: Monotonic, me: str, shard: str | None = None) -> Leadership:
    key = lease_key((2, 4) if shard else None)
    lease = DynamoDbLease(aws, TABLE, key, REGION, LEASE_SECONDS)
    return Leadership(lease, me, monotonic=clock)


@pytest.fixture
async def table(seed_aws: AwsClients) -> AwsClients:
    await create_state_table(seed_aws, TABLE)
    return seed_aws


async def test_one_candidate_leads_and_the_other_waits_while_the_lease_is_renewed(
    table: AwsClients,
) -> None:
    clock = Monotonic()
    a, b = candidate(table, clock, "a"), candidate(table, clock, "b")
    await a.step()
    await b.step()
    assert a.leading() and not b.leading()
    for _ in range(5):  # a renews every 10 s: b never sees it stand still for 15 s
        clock.now += 10
        await a.step()
        await b.step()
        assert a.leading() and not b.leading()
    fence = a.fence()
    assert fence is not None and (fence.holder, fence.epoch) == ("a", 1)
    assert b.fence() is None


async def test_a_paused_leader_stops_leading_before_another_may_take_the_lease(
    table: AwsClients,
) -> None:
    clock = Monotonic()
    a, b = candidate(table, clock, "a"), candidate(table, clock, "b")
    await a.step()
    await b.step()
    old_fence = a.fence()
    clock.now += 13  # a is paused: no renewal
    assert not a.leading()  # it stops acting by itself
    await b.step()
    assert not b.leading()  # the lease is not expired for b yet
    clock.now += 2
    await b.step()
    assert b.leading() and b.fence() is not None
    assert b.fence().epoch == 2  # type: ignore[union-attr]
    await a.step()  # a wakes up: it does not lead, and its renewal is refused
    await a.step()
    assert not a.leading() and a.fence() is None

    # a write a paused leader had in flight carries the old epoch: refused
    stale = DynamoDbStateStore(table, TABLE, REGION, fence=lambda: old_fence)
    with pytest.raises(NotLeader):
        await stale.put("demo", EnvironmentRecord())
    fenced = DynamoDbStateStore(table, TABLE, REGION, fence=b.fence)
    written = await fenced.put("demo", EnvironmentRecord())
    assert written.version == 1
    with pytest.raises(StoreConflict):  # the record's own version is still checked
        await fenced.put("demo", EnvironmentRecord())
    idle = DynamoDbStateStore(table, TABLE, REGION, fence=a.fence)
    with pytest.raises(NotLeader):  # not leading: nothing is even sent
        await idle.save_events([])


async def test_a_lease_handed_over_at_shutdown_is_taken_at_once(table: AwsClients) -> None:
    clock = Monotonic()
    a, b = candidate(table, clock, "a"), candidate(table, clock, "b")
    await a.step()
    await b.step()
    await a.release()  # shutting down, once no pass runs any more
    assert not a.leading() and a.fence() is None
    await b.step()
    assert b.leading() and b.fence().epoch == 2  # type: ignore[union-attr]


async def test_an_election_that_fails_unexpectedly_keeps_trying(table: AwsClients) -> None:
    class Flaky(DynamoDbLease):
        failures = 2

        async def read(self) -> LeaseRecord | None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("unexpected")
            return await super().read()

    lease = Flaky(table, TABLE, lease_key(None), REGION, LEASE_SECONDS)
    a = Leadership(lease, "a", retry_every=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(a.run(stop))
    await until(a.leading, limit=5)
    stop.set()
    await running
    assert lease.failures == 0


async def test_each_shard_has_its_own_lease(table: AwsClients) -> None:
    clock = Monotonic()
    whole, shard = candidate(table, clock, "a"), candidate(table, clock, "b", shard="2/4")
    await whole.step()
    await shard.step()
    assert whole.leading() and shard.leading()
    assert shard.key == "#leader/2/4"


# ---- two real controllers ----


def leader_metric(port: int) -> float | None:
    """`infra_controller_leader` of a controller, None when it does not answer (stopped)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.3) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("infra_controller_leader "):
            return float(line.split()[1])
    return None


def watch(ports: tuple[int, int], until: float, both: list[float]) -> dict[int, float | None]:
    """Sample both controllers until `until` (monotonic); note every time both act."""
    last: dict[int, float | None] = {}
    while time.monotonic() < until:
        last = {port: leader_metric(port) for port in ports}
        if all(value == 1.0 for value in last.values()):
            both.append(time.monotonic())
        time.sleep(0.05)
    return last


def wait_for_leader(
    ports: tuple[int, int], limit: float, both: list[float], among: tuple[int, ...] = ()
) -> int:
    """The port of the first controller (of `among`, default any) seen leading."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = watch(ports, time.monotonic() + 0.2, both)
        leaders = [p for p, value in state.items() if value == 1.0 and p in (among or ports)]
        if leaders:
            return leaders[0]
    raise AssertionError(f"no leader within {limit}s")


def test_two_controllers_one_acts_and_the_lease_moves_on_sigstop_and_sigkill(
    tmp_path: Path, table: AwsClients, stack: DemoStack
) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m}\n"
    )
    env = {
        "CONTROLLER_STATE_STORE": f"dynamodb://{TABLE}",
        "CONTROLLER_LEADER_ELECTION": f"dynamodb://{TABLE}",
        "CONTROLLER_INTERVAL": "1s",
        "CONTROLLER_LOG_FORMAT": "json",
    }
    ports = (free_port(), free_port())
    procs = {port: start_daemon(tmp_path, port, env=env) for port in ports}
    both: list[float] = []
    try:
        first = wait_for_leader(ports, 30, both)
        other = ports[1] if first == ports[0] else ports[0]
        watch(ports, time.monotonic() + 3, both)
        assert leader_metric(other) == 0.0  # the follower observes only
        with urllib.request.urlopen(f"http://127.0.0.1:{other}/status", timeout=2) as r:
            assert json.loads(r.read())["leader"] is False
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{other}/readyz", timeout=2)
        assert not_ready.value.code == 503

        # a long pause of the leader: the other takes over, the paused one never acts again
        os.kill(procs[first].pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        assert wait_for_leader(ports, 25, both, among=(other,)) == other
        took_over = time.monotonic() - paused_at
        watch(ports, time.monotonic() + 3, both)
        os.kill(procs[first].pid, signal.SIGCONT)
        state = watch(ports, time.monotonic() + 3, both)
        assert state == {first: 0.0, other: 1.0}

        # the new leader killed: the first one leads again within 20 s
        procs[other].kill()
        killed_at = time.monotonic()
        assert wait_for_leader(ports, 25, both, among=(first,)) == first
        handed_over = time.monotonic() - killed_at
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert both == []  # never two controllers acting at once
    # the lease is taken 15 s after it was last seen renewed: up to 10 s before the pause
    assert took_over <= 20 and handed_over <= 20


async def test_two_shards_own_disjoint_halves_of_the_environments(
    make_controller: MakeController, table: AwsClients
) -> None:
    names = [f"env-{i}" for i in range(12)]
    body = "version: 1\nenvironments:\n" + "".join(f"  {n}: {{power: on}}\n" for n in names)
    owned = []
    for shard in ("1/2", "2/2"):
        h = make_controller(body, shard=shard, state_store=f"dynamodb://{TABLE}")
        await h.controller.reconcile_once()
        status = h.status()
        assert status["shard"] == shard
        owned.append(set(status["environments"]))
    assert owned[0] | owned[1] == set(names) and not owned[0] & owned[1]
    assert owned[0] and owned[1]


async def test_a_follower_reads_the_leader_s_events_and_keeps_them_when_it_takes_over(
    table: AwsClients,
) -> None:
    leader = EventLog(DynamoDbStateStore(table, TABLE, REGION))
    follower = EventLog(DynamoDbStateStore(table, TABLE, REGION))
    assert await follower.query() == []  # read once, before the leader wrote anything
    leader.add(stamped("suspended"))
    await leader.flush()
    follower.reload()  # each follower pass
    assert [e.kind for e in await follower.query()] == ["suspended"]
    leader.add(stamped("resumed"))
    await leader.flush()
    follower.reload()  # taking over
    follower.add(stamped("run_started"))
    await follower.flush()
    kept = await EventLog(DynamoDbStateStore(table, TABLE, REGION)).query()
    assert [e.kind for e in kept] == ["run_started", "resumed", "suspended"]


async def test_each_shard_keeps_its_own_events(table: AwsClients) -> None:
    one = EventLog(DynamoDbStateStore(table, TABLE, REGION, shard=(1, 2)))
    two = EventLog(DynamoDbStateStore(table, TABLE, REGION, shard=(2, 2)))
    one.add(stamped("suspended"))
    two.add(stamped("resumed"))
    await one.flush()
    await two.flush()
    again = EventLog(DynamoDbStateStore(table, TABLE, REGION, shard=(1, 2)))
    assert [e.kind for e in await again.query()] == ["suspended"]


def stamped(kind: str) -> StampedEvent:
    return StampedEvent(time=datetime.now(UTC), environment="demo", kind=kind, reason="why")


async def test_run_once_takes_a_free_lease_and_refuses_while_another_controller_leads(
    tmp_path: Path, table: AwsClients
) -> None:
    (tmp_path / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  demo: {power: off}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CONTROLLER_STATE_STORE": f"dynamodb://{TABLE}",
        "CONTROLLER_LEADER_ELECTION": f"dynamodb://{TABLE}",
    }
    command = [sys.executable, "-m", "controller", "run", "--once"]

    async def run_once() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await proc.communicate()
        return proc.returncode or 0, stderr.decode()

    code, stderr = await run_once()
    assert code == 0, stderr
    lease = DynamoDbLease(table, TABLE, lease_key(None), REGION, LEASE_SECONDS)
    released = await lease.read()
    assert released is not None and released.holder == "(released)"  # handed back at exit
    assert await lease.take("the-daemon", released) is not None
    code, stderr = await run_once()
    assert code == 1
    assert "another controller holds the lease" in stderr
