"""Automatic rotation and purge by the scheduler, with a moved clock (spec §5.9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from coffer.audit.events import AuditEvent
from coffer.bootstrap import build_app, build_scheduler, build_services
from coffer.domain.keys import Key
from tests.conftest import FakeClock, Kms, initialised, make_settings

KEYS = "/v1/kms/nl-01/keys"


class Recorder:
    """An audit sink that keeps records in memory, to see what the scheduler records."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def write(self, event: AuditEvent) -> None:
        self.events.append(event)


def latest(kms: Kms, key: str = "k") -> int:
    version: int = kms.get(f"{KEYS}/{key}").json()["latestVersion"]
    return version


def test_a_one_day_key_rotates_once_after_a_day_not_twice(kms: Kms) -> None:
    key = kms.create_key("k", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.clock.advance(hours=23, minutes=59)
    assert kms.run(kms.scheduler.run_once).rotated == []
    kms.clock.advance(minutes=1, seconds=1)
    assert kms.run(kms.scheduler.run_once).rotated == [key["identity"]]
    assert kms.run(kms.scheduler.run_once).rotated == []
    assert latest(kms) == 2
    # A scheduler that was down for a week rotates once, not seven times.
    kms.clock.advance(days=7)
    assert kms.run(kms.scheduler.run_once).rotated == [key["identity"]]
    assert kms.run(kms.scheduler.run_once).rotated == []
    assert latest(kms) == 3


def test_disabled_pending_and_non_rotating_keys_are_skipped(kms: Kms) -> None:
    kms.create_key("disabled", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.create_key("pending", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.create_key("manual", rotationPeriodInDays=1)
    kms.client.post(f"{KEYS}/disabled/disable", headers=kms.headers)
    kms.client.delete(f"{KEYS}/pending", headers=kms.headers)
    kms.clock.advance(days=2)
    assert kms.run(kms.scheduler.run_once).rotated == []
    assert [latest(kms, k) for k in ("disabled", "pending", "manual")] == [1, 1, 1]
    # Once enabled again, the overdue key rotates on the next pass.
    kms.client.post(f"{KEYS}/disabled/enable", headers=kms.headers)
    assert len(kms.run(kms.scheduler.run_once).rotated) == 1
    assert latest(kms, "disabled") == 2


def test_changing_the_period_moves_the_due_time(kms: Kms) -> None:
    kms.create_key("k", keyRotationEnabled=True, rotationPeriodInDays=10)
    kms.clock.advance(days=3)
    assert kms.run(kms.scheduler.run_once).rotated == []
    kms.client.patch(f"{KEYS}/k/rotation", json={"rotationPeriodInDays": 2}, headers=kms.headers)
    assert len(kms.run(kms.scheduler.run_once).rotated) == 1


def test_two_schedulers_racing_rotate_each_due_key_once(kms: Kms) -> None:
    identities = {
        kms.create_key(f"k{i}", keyRotationEnabled=True, rotationPeriodInDays=1)["identity"]
        for i in range(5)
    }
    kms.clock.advance(days=1, seconds=1)

    async def race() -> tuple[list[str], int, list[AuditEvent]]:
        recorders = [Recorder(), Recorder()]
        nodes = [build_services(kms.settings, clock=kms.clock, observe=r.write) for r in recorders]
        schedulers = [build_scheduler(node, kms.clock) for node in nodes]
        # Both nodes read the due keys before either writes: the worst interleaving.
        barrier = asyncio.Barrier(2)
        for node in nodes:
            read = node.store.keys_due_for_rotation

            async def read_then_wait(
                now: datetime,
                limit: int,
                after: str = "",
                read=read,  # type: ignore[no-untyped-def]
            ) -> tuple[Sequence[Key], str | None]:
                found = await read(now, limit, after)
                if found[0]:
                    await barrier.wait()
                return found

            node.store.keys_due_for_rotation = read_then_wait  # type: ignore[method-assign]
        try:
            reports = await asyncio.gather(*(s.run_once() for s in schedulers))
        finally:
            for node in nodes:
                await node.close()
        rotated = [i for report in reports for i in report.rotated]
        lost = sum(report.lost_races for report in reports)
        return rotated, lost, [e for r in recorders for e in r.events]

    rotated, lost, events = kms.run(race)
    assert sorted(rotated) == sorted(identities)
    assert lost == len(identities)
    for i in range(5):
        assert latest(kms, f"k{i}") == 2
    # The losers of the race record nothing: only the rotations that happened are audited.
    assert all(e.outcome == "success" for e in events), events
    successes = events
    assert sorted(e.resource_identity or "" for e in successes) == sorted(identities)
    assert {(e.action, e.principal_kind, e.key_version) for e in successes} == {
        ("kms.rotate.scheduled", "system", 2)
    }


def test_the_server_runs_the_scheduler_in_the_background(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", scheduler_interval_seconds=0.05)
    boot = initialised(settings)
    clock = FakeClock()
    with TestClient(build_app(settings, clock=clock)) as client:
        kms = Kms(client, settings, boot, clock)
        kms.create_key("k", keyRotationEnabled=True, rotationPeriodInDays=1)
        clock.advance(days=1, seconds=1)
        deadline = time.monotonic() + 10
        while latest(kms) == 1:
            assert time.monotonic() < deadline, "the background scheduler did not rotate the key"
            time.sleep(0.05)
        assert latest(kms) == 2


def test_a_key_whose_deletion_was_cancelled_after_listing_is_not_purged(kms: Kms) -> None:
    from coffer.errors import Conflict

    kms.create_key("k")
    kms.client.delete(f"{KEYS}/k", headers=kms.headers)
    kms.clock.advance(days=31)
    due, _ = kms.run(kms.services.store.keys_due_for_purge, kms.clock(), 10)
    assert len(due) == 1
    kms.client.delete(f"{KEYS}/k/cancel-deletion", headers=kms.headers)

    async def purge_stale() -> None:
        await kms.services.lifecycle.purge(due[0])

    try:
        kms.run(purge_stale)
    except Conflict:
        pass
    else:
        raise AssertionError("a stale purge must not succeed")
    assert kms.get(f"{KEYS}/k").json()["status"] == "active"


def test_one_failing_key_does_not_stop_the_others(kms: Kms, monkeypatch: Any) -> None:
    broken = kms.create_key("broken", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.create_key("fine", keyRotationEnabled=True, rotationPeriodInDays=1)
    kms.clock.advance(days=1, seconds=1)
    rotate_due = kms.services.lifecycle.rotate_due

    async def failing(key: Key, now: datetime) -> Key:
        if key.identity == broken["identity"]:
            raise RuntimeError("this key cannot rotate")
        return await rotate_due(key, now)

    monkeypatch.setattr(kms.services.lifecycle, "rotate_due", failing)
    report = kms.run(kms.scheduler.run_once)
    assert report.failed == [broken["identity"]]
    assert latest(kms, "fine") == 2


def due_keys(kms: Kms, count: int) -> list[str]:
    """``count`` keys due for rotation now, sorted by identity (the scheduler's order)."""
    identities = [
        kms.create_key(f"k{n}", keyRotationEnabled=True, rotationPeriodInDays=1)["identity"]
        for n in range(count)
    ]
    kms.clock.advance(days=1, seconds=1)
    return sorted(identities)


def test_a_hundred_failing_keys_do_not_stall_the_keys_after_them(
    kms: Kms, monkeypatch: Any
) -> None:
    """More failing keys than a batch holds, all sorting first: every other key still rotates,
    and the failing ones wait out a back-off instead of being tried every pass."""
    identities = due_keys(kms, 130)
    failing = set(identities[:105])
    rotate_due = kms.services.lifecycle.rotate_due
    tried: list[str] = []

    async def rotate_or_fail(key: Key, now: datetime) -> Key:
        tried.append(key.identity)
        if key.identity in failing:
            raise RuntimeError("this key cannot rotate")
        return await rotate_due(key, now)

    monkeypatch.setattr(kms.services.lifecycle, "rotate_due", rotate_or_fail)
    report = kms.run(kms.scheduler.run_once)
    assert sorted(report.rotated) == identities[105:]
    assert sorted(report.failed) == sorted(failing)
    tried.clear()
    again = kms.run(kms.scheduler.run_once)
    assert (again.rotated, again.failed, tried) == ([], [], [])
    assert sorted(again.deferred) == sorted(failing), "reported, not tried, during back-off"
    kms.clock.advance(hours=2)  # past the first back-off (one interval: an hour by default)
    failing.clear()  # mended
    later = kms.run(kms.scheduler.run_once)
    assert sorted(later.rotated) == identities[:105]


def test_a_hundred_forged_key_rows_do_not_stall_the_keys_after_them(kms: Kms) -> None:
    """A writer of the database who forges the rows sorting first (refused by the storage
    barrier) cannot stop automatic rotation of every other key."""
    from sqlalchemy import text

    from tests.conftest import sync_engine

    identities = due_keys(kms, 110)
    forged = identities[:101]
    engine = sync_engine(kms.settings)
    try:
        with engine.begin() as conn:
            for identity in forged:
                conn.execute(text("UPDATE keys SET mac = :mac WHERE identity = :identity"),
                             {"mac": bytes(32), "identity": identity})  # fmt: skip
    finally:
        engine.dispose()
    report = kms.run(kms.scheduler.run_once)
    assert sorted(report.rotated) == identities[101:]
