"""The SQLite store, on a real database file in a temporary state directory."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from alerter.errors import StoreError
from alerter.models import (
    RHYTHM_WINDOW,
    EngineEvent,
    FeedErrorKind,
    FeedStatus,
    Incident,
    IncidentState,
    Message,
    Outgoing,
    Reason,
    Rendered,
    Severity,
)
from alerter.rhythm import merge_recent_times
from alerter.store import SCHEMA_VERSION, Store
from alerter.store import incidents as incidents_module

T0 = 1_700_000_000.0
FEED = "FEED1"


def msg(
    id: int,
    at: int,
    type: str = "TRACK",
    device: str = "0-1",
    name: str = "Anna",
    **kw: object,
) -> Message:
    return Message(
        id=id,
        messenger_id=device,
        messenger_name=name,
        unix_time=at,
        type=type,
        latitude=46.5,
        longitude=7.9,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "alerter.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path)
    yield s
    s.close()


def open_handles(path: Path) -> int:
    """How many of this process's file descriptors point at `path` (Linux)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc")
    n = 0
    for fd in fds.iterdir():
        try:
            n += Path(os.readlink(fd)) == path.resolve()
        except OSError:
            continue
    return n


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def count(store: Store, table: str) -> int:
    return int(store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def incident(id: int, device: str = "0-1", rule: str = "help", message_id: int = 1) -> Incident:
    return Incident(
        id=id,
        device_id=device,
        rule=rule,
        state=IncidentState.OPEN,
        started_at=T0,
        opened_at=T0 + 5,
        updated_at=T0,
        first_message_id=message_id,
        last_message_id=message_id,
    )


def outgoing(incident_id: int | None, *targets: str, title: str = "HELP Anna") -> Outgoing:
    return Outgoing(
        rendered=Rendered(title=title, body="body", short="short", severity=Severity.CRITICAL),
        kind="HELP",
        targets=tuple((t, f"masked-{t}", t == "sms") for t in targets),
        incident_id=incident_id,
    )


# -- open, permissions, schema -----------------------------------------------------------


def test_open_creates_private_state_dir_and_db(db_path: Path) -> None:
    s = Store.open(db_path)
    try:
        s.insert_messages(FEED, [msg(1, 100)], T0, initial=False)
        assert mode(db_path.parent) == 0o700
        assert mode(db_path) == 0o600
        # WAL side files carry the messages too: they must be as private as the db.
        for side in db_path.parent.glob("alerter.db-*"):
            assert mode(side) == 0o600, side.name
    finally:
        s.close()


def test_schema_version_and_tables(store: Store) -> None:
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"feeds", "messages", "devices", "incidents", "incident_events", "notifications",
            "deliveries", "targets", "meta"} <= tables  # fmt: skip


def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    s = Store.open(db_path)
    s.insert_messages(FEED, [msg(1, 100)], T0, initial=False)
    s.set_meta("k", "v")
    s.close()
    s = Store.open(db_path)
    try:
        assert sum(s.message_counts().values()) == 1
        assert s.get_meta("k") == "v"
        s.delete_meta("k")
        assert s.get_meta("k") is None
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        s.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    before = open_handles(db_path)
    with pytest.raises(StoreError, match="newer"):
        Store.open(db_path)
    assert open_handles(db_path) == before  # the refused connection was closed
    # Refused, not touched: the newer schema is left as it was.
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        Store.open(blocker / "alerter.db")


def test_not_a_database_is_store_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreError):
        Store.open(db_path)


# -- messages and devices ----------------------------------------------------------------


def test_insert_messages_dedups_by_id_and_returns_only_new(store: Store) -> None:
    a, b = msg(10, 100), msg(11, 200)
    assert store.insert_messages(FEED, [a, b], T0, initial=True) == [a, b]
    c = msg(12, 300)
    # The same ids again (even with changed fields) are not new; the first copy stays.
    again = store.insert_messages(FEED, [replace(a, type="HELP"), c, b], T0 + 1, initial=False)
    assert again == [c]
    assert sum(store.message_counts().values()) == 3
    stored = store.messages_by_id([10, 12])
    assert stored[10].message.type == "TRACK"
    assert stored[10].initial is True
    assert stored[10].received_at == T0
    assert stored[12].initial is False
    assert stored[12].received_at == T0 + 1
    assert stored[12].feed_id == FEED
    assert store.feed_states() == {}  # messages do not invent feed rows


def test_duplicate_ids_inside_one_batch(store: Store) -> None:
    a = msg(10, 100)
    assert store.insert_messages(FEED, [a, a], T0, initial=False) == [a]
    assert store.devices()["0-1"].recent_times == (100,)


def test_message_round_trip_keeps_every_field(store: Store) -> None:
    m = Message(
        id=2**62,
        messenger_id="0-3537610",
        messenger_name="Anna",
        unix_time=1_500_000_000,
        type="UNKNOWN-NEW",
        latitude=None,
        longitude=None,
        altitude=-12,
        model_id="SPOT3",
        battery="LOW",
        content="  hello",
        date_time="2017-07-14T02:40:00-0700",
        extra=(("clientUnixTime", "0"), ("hidden", "0")),
    )
    store.insert_messages(FEED, [m], T0, initial=False)
    assert store.messages_by_id([m.id])[m.id].message == m


def test_device_last_message_by_time_then_id_out_of_order(store: Store) -> None:
    newest = msg(5, 300)  # a low id can carry the latest time
    store.insert_messages(FEED, [msg(50, 200), newest], T0, initial=False)
    assert store.devices()["0-1"].last is not None
    assert store.devices()["0-1"].last.message == newest  # type: ignore[union-attr]
    # A late arrival with an older time does not displace the last message.
    store.insert_messages(FEED, [msg(99, 100, "HELP")], T0 + 1, initial=False)
    dev = store.devices()["0-1"]
    assert dev.last is not None
    assert dev.last.message.id == 5
    # Same unixTime: the higher id wins (SPOT's own order on ties).
    store.insert_messages(FEED, [msg(7, 300)], T0 + 2, initial=False)
    dev = store.devices()["0-1"]
    assert dev.last is not None
    assert dev.last.message.id == 7
    store.insert_messages(FEED, [msg(6, 300)], T0 + 3, initial=False)
    dev = store.devices()["0-1"]
    assert dev.last is not None
    assert dev.last.message.id == 7
    assert dev.recent_times == (300, 200, 100)
    assert dev.last_by_type == {"HELP": 100, "TRACK": 300}


def test_devices_are_kept_apart(store: Store) -> None:
    store.insert_messages(
        FEED,
        [msg(1, 100, device="0-1", name="Anna"), msg(2, 200, device="0-2", name="Ben")],
        T0,
        initial=False,
    )
    devs = store.devices()
    assert set(devs) == {"0-1", "0-2"}
    assert devs["0-1"].name == "Anna"
    assert devs["0-2"].name == "Ben"
    assert devs["0-2"].feed_id == FEED
    assert devs["0-1"].recent_times == (100,)


def test_recent_times_newest_first_capped(store: Store) -> None:
    times = list(range(1000, 1000 + 10 * (RHYTHM_WINDOW + 7), 10))
    # Arrive shuffled, in two batches, with a duplicate time.
    first, second = times[::2], times[1::2]
    store.insert_messages(FEED, [msg(i + 1, t) for i, t in enumerate(first)], T0, initial=False)
    store.insert_messages(
        FEED, [msg(500 + i, t) for i, t in enumerate([*second, times[-1]])], T0, initial=False
    )
    recent = store.devices()["0-1"].recent_times
    assert list(recent) == sorted(times, reverse=True)[:RHYTHM_WINDOW]


def test_merge_recent_times() -> None:
    assert merge_recent_times([5, 3], [4, 5, 9]) == [9, 5, 4, 3]
    assert len(merge_recent_times(range(100), range(50, 200))) == RHYTHM_WINDOW


def test_last_by_type_keeps_newest_time_per_type(store: Store) -> None:
    store.insert_messages(
        FEED, [msg(1, 500, "HELP"), msg(2, 300, "HELP"), msg(3, 400, "TRACK")], T0, initial=False
    )
    store.insert_messages(FEED, [msg(4, 200, "HELP"), msg(5, 450, "OK")], T0, initial=False)
    assert store.devices()["0-1"].last_by_type == {"HELP": 500, "TRACK": 400, "OK": 450}


def test_known_before(store: Store) -> None:
    store.insert_messages(FEED, [msg(1, 100), msg(2, 200)], T0, initial=False)
    store.insert_messages(FEED, [msg(3, 300)], T0 + 10, initial=False)
    assert store.known_before([1, 2, 3, 4], T0 + 10) == {1, 2}
    assert store.known_before([1, 2, 3, 4], T0 + 10.001) == {1, 2, 3}
    assert store.known_before([1, 2], T0) == set()  # strictly before
    assert store.known_before([], T0 + 100) == set()
    assert store.known_before(iter([3]), T0 + 100) == {3}  # any iterable


def test_pending_ordered_by_time_then_id(store: Store) -> None:
    store.insert_messages(
        FEED, [msg(30, 200), msg(10, 300), msg(20, 200), msg(5, 100)], T0, initial=False
    )
    assert [r.message.id for r in store.pending()] == [5, 20, 30, 10]
    assert [r.message.id for r in store.pending(limit=2)] == [5, 20]


# -- evaluation commits ------------------------------------------------------------------


def test_commit_evaluation_writes_everything(store: Store) -> None:
    store.insert_messages(FEED, [msg(1, 100, "HELP"), msg(2, 200)], T0, initial=False)
    store.commit_evaluation(
        processed=[1],
        incidents=[incident(1)],
        events=[EngineEvent(1, T0 + 5, Reason.OPENED, 1, True)],
        outgoing=[outgoing(1, "sms", "mail")],
        at=T0 + 5,
    )
    assert [r.message.id for r in store.pending()] == [2]
    assert store.incidents() == [incident(1)]
    assert store.next_incident_id() == 2
    assert store.history(1) == [EngineEvent(1, T0 + 5, Reason.OPENED, 1, True)]
    due = store.pending_deliveries(T0 + 5)
    assert [(d.target, d.label, d.short, d.incident_id, d.title) for d in due] == [
        ("sms", "masked-sms", True, 1, "HELP Anna"),
        ("mail", "masked-mail", False, 1, "HELP Anna"),
    ]
    assert {d.incident_state for d in due} == {"open"}


def test_commit_evaluation_updates_an_incident_in_place(store: Store) -> None:
    store.commit_evaluation(processed=[], incidents=[incident(1)], events=[], outgoing=[], at=T0)
    done = replace(incident(1), state=IncidentState.RESOLVED, resolved_at=T0 + 50)
    store.commit_evaluation(processed=[], incidents=[done], events=[], outgoing=[], at=T0 + 50)
    assert count(store, "incidents") == 1
    assert store.incidents() == []
    assert store.incidents(resolved_since=T0) == [done]
    assert store.incidents(resolved_since=T0 + 51) == []


def _nothing_written(store: Store) -> None:
    assert [r.message.id for r in store.pending()] == [1]
    assert count(store, "incidents") == 0
    assert count(store, "incident_events") == 0
    assert count(store, "notifications") == 0
    assert count(store, "deliveries") == 0


def test_commit_evaluation_bad_row_writes_nothing(store: Store) -> None:
    store.insert_messages(FEED, [msg(1, 100, "HELP")], T0, initial=False)
    with pytest.raises(StoreError):
        store.commit_evaluation(
            processed=[1],
            incidents=[incident(1)],
            # No incident 99: the foreign key fails after the incident was written.
            events=[EngineEvent(99, T0, Reason.OPENED, 1, True)],
            outgoing=[outgoing(1, "sms")],
            at=T0,
        )
    _nothing_written(store)
    # The connection is usable afterwards (no transaction left open).
    store.commit_evaluation(processed=[1], incidents=[incident(1)], events=[], outgoing=[], at=T0)
    assert store.pending() == []


def test_commit_evaluation_failure_mid_way_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_messages(FEED, [msg(1, 100, "HELP")], T0, initial=False)
    real = incidents_module.write_outgoing

    def write_then_fail(c: sqlite3.Connection, out: list[Outgoing], at: float) -> None:
        real(c, out, at)
        raise RuntimeError("crash after the outbox rows")

    monkeypatch.setattr(incidents_module, "write_outgoing", write_then_fail)
    with pytest.raises(RuntimeError, match="crash"):
        store.commit_evaluation(
            processed=[1],
            incidents=[incident(1)],
            events=[EngineEvent(1, T0, Reason.OPENED, 1, True)],
            outgoing=[outgoing(1, "sms")],
            at=T0,
        )
    _nothing_written(store)


def test_two_open_incidents_for_one_device_and_rule_are_refused(store: Store) -> None:
    store.commit_evaluation(processed=[], incidents=[incident(1)], events=[], outgoing=[], at=T0)
    with pytest.raises(StoreError):
        store.commit_evaluation(
            processed=[], incidents=[incident(2)], events=[], outgoing=[], at=T0
        )
    assert [i.id for i in store.incidents()] == [1]


# -- outbox ------------------------------------------------------------------------------


def test_due_deliveries_mark_sent_failed_dropped(store: Store) -> None:
    store.enqueue([outgoing(None, "a", "b", title="first")], T0)
    store.enqueue([outgoing(None, "a", title="second")], T0 + 10)
    assert min(d.next_attempt for d in store.pending_deliveries()) == T0
    due = store.pending_deliveries(T0)
    assert [(d.title, d.target) for d in due] == [("first", "a"), ("first", "b")]
    assert len(store.pending_deliveries(T0 + 10)) == 3
    assert len(store.pending_deliveries(T0 + 10, limit=2)) == 2
    first_a, first_b, second_a = store.pending_deliveries(T0 + 10)

    store.mark_sent(first_a.id, T0 + 11)

    store.mark_failed(first_b.id, "HTTP 500", T0 + 60)
    due = store.pending_deliveries(T0 + 20)
    assert [d.id for d in due] == [second_a.id]
    later = {d.id: d for d in store.pending_deliveries(T0 + 60)}
    assert later[first_b.id].attempts == 1
    assert min(d.next_attempt for d in store.pending_deliveries()) == T0 + 10
    assert store.oldest_pending_delivery() == T0

    store.drop_delivery(first_b.id, "incident over")
    assert [d.id for d in store.pending_deliveries(T0 + 1000)] == [second_a.id]
    assert store.delivery_counts() == {"sent": 1, "dropped": 1, "pending": 1}
    row = store.conn.execute(
        "SELECT last_error, attempts, sent_at FROM deliveries WHERE id = ?", (first_a.id,)
    ).fetchone()
    assert tuple(row) == (None, 1, T0 + 11)


def test_outbox_survives_reopen(db_path: Path) -> None:
    s = Store.open(db_path)
    s.enqueue([outgoing(None, "a")], T0)
    s.close()
    s = Store.open(db_path)
    try:
        assert [d.target for d in s.pending_deliveries(T0)] == ["a"]
    finally:
        s.close()


# -- feed state --------------------------------------------------------------------------


def test_feed_state_survives_reopen(db_path: Path) -> None:
    s = Store.open(db_path)
    s.ensure_feed(FEED, T0)
    s.ensure_feed("FEED2", T0 + 1)
    s.ensure_feed(FEED, T0 + 99)  # idempotent: watched_since stays the first time
    assert s.last_request_any() is None
    s.record_request(FEED, T0 + 2)
    s.record_request("FEED2", T0 + 4)
    s.record_success(FEED, T0 + 3, "Alps")
    s.record_failure("FEED2", T0 + 5, FeedErrorKind.UNAVAILABLE, "HTTP 500", T0 + 155)
    assert s.feed_states()["FEED2"].failures == 1
    s.record_failure("FEED2", T0 + 6, FeedErrorKind.BLOCKED, "HTTP 403", T0 + 9999)
    assert s.feed_states()["FEED2"].failures == 2
    s.mark_synced(FEED, T0 + 3)
    s.mark_synced(FEED, T0 + 50)  # the first sync is kept
    s.insert_messages(FEED, [msg(1, 100)], T0, initial=True)
    s.close()

    s = Store.open(db_path)
    try:
        states = s.feed_states()
        assert s.last_request_any() == T0 + 4
        one, two = states[FEED], states["FEED2"]
        assert (one.last_request, one.last_success, one.name, one.synced_at) == (
            T0 + 2, T0 + 3, "Alps", T0 + 3,
        )  # fmt: skip
        assert (one.watched_since, one.failures, one.error_kind) == (T0, 0, None)
        assert s.message_counts() == {FEED: 1}
        assert (two.failures, two.error_kind, two.last_error, two.not_before) == (
            2, "blocked", "HTTP 403", T0 + 9999,
        )  # fmt: skip
        assert (two.last_failure, two.synced_at, two.watched_since) == (T0 + 6, None, T0 + 1)
        # A success clears the failure record and the backoff, keeps a known name.
        s.record_success("FEED2", T0 + 7, None)
        two = s.feed_states()["FEED2"]
        assert (two.failures, two.error_kind, two.last_error, two.not_before) == (
            0, None, None, None,
        )  # fmt: skip
        s.set_feed_told("FEED2", FeedStatus.BLOCKED)
        assert s.feed_states()["FEED2"].told == "blocked"
    finally:
        s.close()


def test_record_failure_of_unknown_feed(store: Store) -> None:
    store.record_failure("NOPE", T0, FeedErrorKind.UNAVAILABLE, "x", None)
    assert "NOPE" not in store.feed_states()


def test_a_read_only_open_refuses_an_older_schema_and_changes_nothing(db_path: Path) -> None:
    """`status`, `export` and `backup` of a newly installed version must not migrate the
    live database under the old service: they open it without migrating."""
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    conn.close()

    with pytest.raises(StoreError, match="older than this version's"):
        Store.open(db_path, migrate=False)

    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION - 1
    conn.close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")  # as the service leaves it
    conn.close()
    Store.open(db_path, migrate=False).close()  # current: fine
