"""Retention: `Store.prune` forgets old messages but never what an incident, a device or
the engine still needs, and keeps the incidents and the outbox consistent; `Pruner`
runs it on the clock."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from alerter.clock import FakeClock
from alerter.errors import StoreError
from alerter.models import (
    SPOT_KEEPS,
    EngineEvent,
    Incident,
    IncidentState,
    Message,
    Outgoing,
    Reason,
    Rendered,
    Severity,
)
from alerter.retention import MARGIN, Pruner
from alerter.store import Store

FEED = "FEED1"
DAY = 86400.0
NOW = 1_800_000_000.0
OLD = int(NOW - 60 * DAY)  # well before any cutoff below
CUTOFF = NOW - 30 * DAY


def msg(id: int, at: float, device: str = "0-1", type: str = "TRACK") -> Message:
    return Message(id, device, f"dev {device}", int(at), type, 46.5, 7.9)


def incident(
    id: int,
    device: str,
    rule: str,
    first: int,
    last: int,
    state: IncidentState = IncidentState.OPEN,
    resolved_at: float | None = None,
    resolved_by: int | None = None,
) -> Incident:
    return Incident(
        id=id, device_id=device, rule=rule, state=state, started_at=OLD, opened_at=OLD,
        updated_at=OLD, first_message_id=first, last_message_id=last,
        resolved_at=resolved_at, resolved_by_message_id=resolved_by,
    )  # fmt: skip


def outgoing(incident_id: int | None, *targets: str) -> Outgoing:
    return Outgoing(
        rendered=Rendered("HELP", "body at 46.5, 7.9", "short", Severity.CRITICAL),
        kind="opened",
        targets=tuple((t, t, False) for t in targets),
        incident_id=incident_id,
    )


def ids(store: Store, table: str) -> set[int]:
    return {r[0] for r in store.conn.execute(f"SELECT id FROM {table}")}


def consistent(store: Store) -> None:
    """Foreign keys hold and nothing left refers to a message that is gone."""
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    messages = ids(store, "messages")
    for col in ("first_message_id", "last_message_id", "resolved_by_message_id"):
        refs = {r[0] for r in store.conn.execute(f"SELECT {col} FROM incidents")} - {None}
        assert refs <= messages, col
    events = {r[0] for r in store.conn.execute("SELECT message_id FROM incident_events")}
    assert events - {None} <= messages
    last = {r[0] for r in store.conn.execute("SELECT last_message_id FROM devices")}
    assert last <= messages


@pytest.fixture
def world(store: Store) -> Store:
    """Three devices' old history, their incidents in every state, and the outbox.

    device 0-1: old TRACKs 1-4, an open HELP (first 2, last 3, an update event on 4),
                latest message 10 (recent);
    device 0-2: old messages 20-24 only (24 is its latest); an acknowledged incident
                on 21; a resolved one (22 -> 23) long ago, delivered;
    device 0-3: a resolved incident long ago whose resolution is still pending delivery
                (30 -> 31), a resolved incident recently (32 -> 33), and the newest
                incident, old and resolved (34 -> 35); latest message 36 (recent);
    device 0-4: message 40 (old, not yet processed by the engine), 41 (old time, but
                received just now), latest message 42 (recent);
    outbox: incidents 1, 3, 4 and 6 notified (all delivered but incident 4's), and two
    admin notices long ago (one delivered, one still pending).
    """
    store.insert_messages(FEED, [msg(i, OLD + i) for i in (1, 2, 3, 4)], OLD + 10, initial=False)
    store.insert_messages(FEED, [msg(10, NOW - DAY)], NOW - DAY, initial=False)
    store.insert_messages(
        FEED, [msg(i, OLD + i, "0-2") for i in range(20, 25)], OLD + 30, initial=False
    )
    store.insert_messages(
        FEED, [msg(i, OLD + i, "0-3") for i in range(30, 36)], OLD + 40, initial=False
    )
    store.insert_messages(FEED, [msg(36, NOW - DAY, "0-3")], NOW - DAY, initial=False)
    store.insert_messages(FEED, [msg(40, OLD + 50, "0-4")], OLD + 50, initial=False)
    store.insert_messages(FEED, [msg(41, OLD + 51, "0-4")], NOW - 5, initial=False)
    store.insert_messages(FEED, [msg(42, NOW - DAY, "0-4")], NOW - DAY, initial=False)
    processed = sorted(ids(store, "messages") - {40})
    resolved = IncidentState.RESOLVED
    long_ago = OLD + 100
    store.commit_evaluation(
        processed=processed,
        incidents=[
            incident(1, "0-1", "help", 2, 3),
            incident(2, "0-2", "custom", 21, 21, IncidentState.ACKNOWLEDGED),
            incident(3, "0-2", "help", 22, 22, resolved, long_ago, 23),
            incident(4, "0-3", "help", 30, 30, resolved, long_ago, 31),
            incident(5, "0-3", "custom", 32, 32, resolved, NOW - DAY, 33),
            incident(6, "0-3", "sos", 34, 34, resolved, long_ago, 35),
        ],
        events=[
            EngineEvent(1, OLD + 2, Reason.OPENED, 2, True),
            EngineEvent(1, OLD + 4, Reason.UPDATED, 4, False),
            EngineEvent(3, OLD + 22, Reason.OPENED, 22, True),
            EngineEvent(3, long_ago, Reason.RESOLVED, 23, True),
            EngineEvent(4, long_ago, Reason.RESOLVED, 31, True),
            EngineEvent(6, long_ago, Reason.RESOLVED, 35, True),
        ],
        outgoing=[outgoing(1, "a", "b"), outgoing(3, "a"), outgoing(4, "a"), outgoing(6, "a")],
        at=OLD + 100,
    )
    # Every delivery went, except incident 4's; admin notices: one sent, one pending.
    for d in store.pending_deliveries():
        if d.incident_id != 4:
            store.mark_sent(d.id, OLD + 101)
    store.enqueue([outgoing(None, "admin")], OLD + 102)
    store.enqueue([outgoing(None, "admin")], OLD + 103)
    notice = min(d.id for d in store.pending_deliveries() if d.incident_id is None)
    store.mark_sent(notice, OLD + 104)
    return store


def test_prune_keeps_what_is_needed_and_forgets_the_rest(world: Store) -> None:
    before = ids(world, "messages")

    pruned = world.prune(CUTOFF)

    kept = ids(world, "messages")
    assert pruned == len(before - kept)
    # Gone: old messages no incident that stays and no device needs.
    assert before - kept == {1, 20, 22, 23}
    assert {2, 3, 4} <= kept  # the open HELP: first, last, and its events' messages
    assert 21 in kept  # an acknowledged incident's
    assert {30, 31} <= kept  # a resolved incident whose resolution is still pending
    assert {32, 33} <= kept  # resolved after the cutoff
    assert {34, 35} <= kept  # the newest incident's (it stays: ids are never reused)
    assert {10, 24, 36, 42} <= kept  # each device's latest message
    assert 40 in kept  # not processed yet
    assert 41 in kept  # old time, but received after the cutoff
    consistent(world)


def test_prune_removes_old_resolved_incidents_whole(world: Store) -> None:
    world.prune(CUTOFF)

    # 3 goes (resolved long ago, delivered); 4 has a pending delivery; 5 is recent;
    # 6 is the newest incident id (ids are never given out twice).
    assert ids(world, "incidents") == {1, 2, 4, 5, 6}
    assert world.next_incident_id() == 7
    incident_of = dict(world.conn.execute("SELECT id, incident_id FROM notifications"))
    assert 3 not in incident_of.values()
    assert {r[0] for r in world.conn.execute("SELECT incident_id FROM incident_events")} == {
        1, 4, 6,
    }  # fmt: skip
    # The admin notice that was delivered went; the pending one stays.
    assert list(incident_of.values()).count(None) == 1
    assert [d.target for d in world.pending_deliveries()] == ["a", "admin"]
    assert world.delivery_counts() == {"sent": 3, "pending": 2}
    consistent(world)


def test_prune_never_touches_open_or_acknowledged_incidents(world: Store) -> None:
    open_before = [i for i in world.incidents() if i.is_open]
    world.prune(NOW + 1000 * DAY)  # even with a cutoff in the future

    assert [i for i in world.incidents() if i.is_open] == open_before
    assert {2, 3, 21} <= ids(world, "messages")
    assert set(world.devices()) == {"0-1", "0-2", "0-3", "0-4"}
    assert all(d.last is not None for d in world.devices().values())
    consistent(world)


def test_prune_again_finds_nothing(world: Store) -> None:
    assert world.prune(CUTOFF) > 0
    assert world.prune(CUTOFF) == 0


def test_prune_before_everything_forgets_nothing(world: Store) -> None:
    before = {t: ids(world, t) for t in ("messages", "incidents", "notifications", "deliveries")}
    assert world.prune(OLD - DAY) == 0
    assert {t: ids(world, t) for t in before} == before


def test_prune_then_the_engine_still_sees_its_incidents(world: Store) -> None:
    world.prune(CUTOFF)
    wanted = {m for i in world.incidents(resolved_since=CUTOFF) for m in
              (i.first_message_id, i.last_message_id) if m is not None}  # fmt: skip
    assert set(world.messages_by_id(wanted)) == wanted


def test_prune_is_one_transaction(world: Store) -> None:
    before = {t: ids(world, t) for t in ("messages", "incidents", "notifications", "deliveries")}
    # A trigger makes the last statement (the messages) fail after everything else ran.
    world.conn.execute(
        "CREATE TRIGGER no_delete BEFORE DELETE ON messages BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(StoreError):
        world.prune(CUTOFF)
    assert {t: ids(world, t) for t in before} == before
    world.conn.execute("DROP TRIGGER no_delete")
    assert world.prune(CUTOFF) == 4  # the connection is usable afterwards


# -- the task ---------------------------------------------------------------------------


def test_pruner_with_no_retention_keeps_everything(world: Store) -> None:
    before = ids(world, "messages")
    pruner = Pruner(world, FakeClock(NOW), None)
    assert pruner.keep is None
    assert pruner.prune() == 0
    assert ids(world, "messages") == before


async def test_pruner_with_no_retention_runs_until_stopped(world: Store) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(world, FakeClock(NOW), None).run(stop))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()  # the service ends when one of its tasks does
    stop.set()
    await asyncio.wait_for(task, 1)


def test_pruner_keeps_at_least_what_spot_and_the_engine_may_ask_for(world: Store) -> None:
    lookback = 6 * 3600.0
    pruner = Pruner(world, FakeClock(NOW), 1 * DAY, lookback=lookback)
    assert pruner.keep == pruner.floor == SPOT_KEEPS + lookback + MARGIN
    assert Pruner(world, FakeClock(NOW), 30 * DAY, lookback=lookback).keep == 30 * DAY


def test_pruner_prunes_at_its_retention(world: Store) -> None:
    pruner = Pruner(world, FakeClock(NOW), 30 * DAY)
    assert pruner.prune() == 4
    assert {1, 20, 22, 23}.isdisjoint(ids(world, "messages"))


async def test_pruner_runs_at_start_then_every_hour(
    world: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(NOW - 40 * DAY)  # at first, nothing is old enough
    calls: list[float] = []
    real = world.prune

    ten_days_on = asyncio.Event()

    def spy(before: float) -> int:
        calls.append(before)
        if before >= NOW - 30 * DAY:
            ten_days_on.set()
        return real(before)

    world.prune = spy  # type: ignore[method-assign]
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, "alerter.retention")
    task = asyncio.create_task(Pruner(world, clock, 30 * DAY, every=3600).run(stop))
    await asyncio.sleep(0)
    assert calls == [NOW - 70 * DAY]
    await asyncio.wait_for(ten_days_on.wait(), 5)  # FakeClock: each sleep is at once
    stop.set()
    await asyncio.wait_for(task, 1)

    assert len(calls) >= 240  # an hour apart over ten days
    assert all(b - a == 3600 for a, b in itertools.pairwise(calls))
    assert 1 not in ids(world, "messages")
    assert "retention: forgot" in caplog.text


async def test_pruner_survives_a_failed_prune(
    world: Store, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = 0
    third = asyncio.Event()
    real = world.prune

    def flaky(before: float) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 3:
            third.set()
        if attempts == 1:
            raise StoreError("state database write failed: disk I/O error")
        if attempts == 2:
            raise RuntimeError("a bug")
        return real(before)

    world.prune = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(world, FakeClock(NOW), 30 * DAY).run(stop))
    await asyncio.wait_for(third.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert 1 not in ids(world, "messages")
    assert "prune failed: state database write failed" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


async def test_pruner_warns_when_the_retention_is_raised(
    world: Store, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    stop.set()
    await Pruner(world, FakeClock(NOW), DAY).run(stop)
    assert "retention 1 d is shorter than SPOT keeps messages" in caplog.text
    assert "keeping 8 d" in caplog.text


def test_world_fixture_is_what_its_docstring_says(world: Store) -> None:
    devices = world.devices()
    assert {k: d.last.message.id for k, d in devices.items() if d.last} == {
        "0-1": 10, "0-2": 24, "0-3": 36, "0-4": 42,
    }  # fmt: skip
    assert [r.message.id for r in world.pending()] == [40]
    assert [(i.id, i.first_message_id) for i in world.incidents()] == [(1, 2), (2, 21)]
    consistent(world)
