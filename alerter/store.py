"""The SQLite state: messages (the archive), devices, feeds, incidents and the outbox.

One connection, WAL, versioned migrations (`PRAGMA user_version`). Every write that
belongs together is one transaction: the engine's decisions, the messages' processed
marks, the incidents and the outbox rows commit together or not at all, so a crash at
any point re-evaluates exactly what was not committed.

`synchronous=NORMAL` under WAL survives a killed process; a power cut may lose the
last commits, which the next poll re-reads from SPOT (it keeps 7 days) and re-processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerter.errors import StoreError
from alerter.models import (
    RHYTHM_WINDOW,
    Device,
    Incident,
    IncidentState,
    Message,
    Received,
    Rendered,
)

_MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE feeds (
        feed_id TEXT PRIMARY KEY,
        name TEXT,
        last_request REAL,
        last_success REAL,
        last_failure REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        error_kind TEXT,
        last_error TEXT,
        not_before REAL,
        synced_at REAL,
        watched_since REAL,
        told TEXT NOT NULL DEFAULT 'ok'
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        feed_id TEXT NOT NULL,
        messenger_id TEXT NOT NULL,
        messenger_name TEXT NOT NULL,
        unix_time INTEGER NOT NULL,
        type TEXT NOT NULL,
        latitude REAL,
        longitude REAL,
        altitude INTEGER,
        model_id TEXT,
        battery TEXT,
        content TEXT,
        date_time TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        received_at REAL NOT NULL,
        initial INTEGER NOT NULL DEFAULT 0,
        processed_at REAL
    );
    CREATE INDEX messages_pending ON messages(unix_time) WHERE processed_at IS NULL;
    CREATE INDEX messages_device_time ON messages(messenger_id, unix_time);
    CREATE INDEX messages_feed ON messages(feed_id);
    CREATE TABLE devices (
        messenger_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        feed_id TEXT NOT NULL,
        last_message_id INTEGER,
        last_time INTEGER,
        recent_times TEXT NOT NULL DEFAULT '[]',
        last_by_type TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        first_message_id INTEGER,
        last_message_id INTEGER,
        last_notified_at REAL,
        reminders INTEGER NOT NULL DEFAULT 0,
        updates INTEGER NOT NULL DEFAULT 0,
        escalation INTEGER NOT NULL DEFAULT 0,
        late INTEGER NOT NULL DEFAULT 0,
        resolved_at REAL,
        resolved_by_message_id INTEGER
    );
    CREATE UNIQUE INDEX incidents_one_open ON incidents(device_id, rule)
        WHERE state != 'resolved';
    CREATE INDEX incidents_resolved ON incidents(resolved_at);
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at REAL NOT NULL,
        reason TEXT NOT NULL,
        message_id INTEGER,
        notified INTEGER NOT NULL
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER REFERENCES incidents(id),
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        short TEXT NOT NULL,
        severity TEXT NOT NULL,
        resolution INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        target TEXT NOT NULL,
        label TEXT NOT NULL,
        short INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_error TEXT,
        sent_at REAL
    );
    CREATE INDEX deliveries_pending ON deliveries(next_attempt) WHERE state = 'pending';
    CREATE TABLE targets (
        target TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        failing_since REAL,
        told INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the store remembers of one feed between requests and restarts."""

    feed_id: str
    name: str | None = None
    last_request: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    failures: int = 0
    error_kind: str | None = None
    last_error: str | None = None
    not_before: float | None = None
    synced_at: float | None = None
    watched_since: float | None = None
    told: str = "ok"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification to write to the outbox, with its targets."""

    rendered: Rendered
    kind: str
    targets: tuple[tuple[str, str, bool], ...]  # (target id, masked label, short form)
    incident_id: int | None = None
    resolution: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification owed to one target."""

    id: int
    notification_id: int
    incident_id: int | None
    target: str
    label: str
    short: bool
    attempts: int
    next_attempt: float
    title: str
    body: str
    short_text: str
    severity: str
    kind: str
    resolution: bool
    incident_state: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """A target's delivery record."""

    target: str
    label: str
    failures: int
    failing_since: float | None
    told: bool


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One line of an incident's history."""

    incident_id: int
    at: float
    reason: str
    message_id: int | None
    notified: bool


_MESSAGE_COLUMNS = (
    "id, feed_id, messenger_id, messenger_name, unix_time, type, latitude, longitude, "
    "altitude, model_id, battery, content, date_time, extra, received_at, initial"
)
_INCIDENT_COLUMNS = (
    "id, device_id, rule, state, started_at, opened_at, updated_at, first_message_id, "
    "last_message_id, last_notified_at, reminders, updates, escalation, late, resolved_at, "
    "resolved_by_message_id"
)


_INCIDENT_UPDATE = ", ".join(
    f"{col} = excluded.{col}" for col in _INCIDENT_COLUMNS.replace(" ", "").split(",")[1:]
)


def _received(row: sqlite3.Row) -> Received:
    extra = json.loads(row["extra"])
    msg = Message(
        id=row["id"],
        messenger_id=row["messenger_id"],
        messenger_name=row["messenger_name"],
        unix_time=row["unix_time"],
        type=row["type"],
        latitude=row["latitude"],
        longitude=row["longitude"],
        altitude=row["altitude"],
        model_id=row["model_id"],
        battery=row["battery"],
        content=row["content"],
        date_time=row["date_time"],
        extra=tuple(sorted(extra.items())),
    )
    return Received(msg, row["feed_id"], row["received_at"], bool(row["initial"]))


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(
        id=row["id"],
        device_id=row["device_id"],
        rule=row["rule"],
        state=IncidentState(row["state"]),
        started_at=row["started_at"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        first_message_id=row["first_message_id"],
        last_message_id=row["last_message_id"],
        last_notified_at=row["last_notified_at"],
        reminders=row["reminders"],
        updates=row["updates"],
        escalation=row["escalation"],
        late=bool(row["late"]),
        resolved_at=row["resolved_at"],
        resolved_by_message_id=row["resolved_by_message_id"],
    )


def merge_recent_times(times: Iterable[int], new: Iterable[int]) -> list[int]:
    """A device's newest distinct message times, newest first, at most RHYTHM_WINDOW."""
    return sorted(set(times).union(new), reverse=True)[:RHYTHM_WINDOW]


class Store:
    """The service's SQLite database."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating, 0700 directory) and migrate the database at `path`."""
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(path, 0o600)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            store = cls(conn, path)
            store._migrate()
        except (sqlite3.Error, OSError, StoreError) as exc:
            # A refused database (e.g. a newer schema) must not leave its connection open.
            if conn is not None:
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the state database {path}: {exc}") from exc
        return store

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, newer than this version knows "
                f"({SCHEMA_VERSION}); upgrade spot-alerter"
            )
        for number in range(version, SCHEMA_VERSION):
            # One script, one transaction: a migration applies whole or not at all.
            self.conn.executescript(
                "BEGIN IMMEDIATE;"
                + _MIGRATIONS[number]
                + f"; PRAGMA user_version={number + 1}; COMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write; sqlite3 errors become StoreError."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"state database write failed: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state database read failed: {exc}") from exc

    # -- meta ---------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A stored service-level value."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a service-level value."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Forget a service-level value."""
        with self.transaction() as c:
            c.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- feeds --------------------------------------------------------------

    def feed_states(self) -> dict[str, FeedState]:
        """Every known feed's state (read every cycle: keep it cheap)."""
        rows = self._query("SELECT * FROM feeds")
        return {
            r["feed_id"]: FeedState(
                feed_id=r["feed_id"],
                name=r["name"],
                last_request=r["last_request"],
                last_success=r["last_success"],
                last_failure=r["last_failure"],
                failures=r["failures"],
                error_kind=r["error_kind"],
                last_error=r["last_error"],
                not_before=r["not_before"],
                synced_at=r["synced_at"],
                watched_since=r["watched_since"],
                told=r["told"],
            )
            for r in rows
        }

    def ensure_feed(self, feed_id: str, now: float) -> None:
        """Make sure a feed row exists; the first time, remember when watching began."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO feeds(feed_id, watched_since) VALUES (?, ?)", (feed_id, now)
            )

    def last_request_any(self) -> float | None:
        """The latest request to SPOT of any feed (spacing holds across restarts)."""
        rows = self._query("SELECT MAX(last_request) AS t FROM feeds")
        return rows[0]["t"] if rows else None

    def record_request(self, feed_id: str, at: float) -> None:
        """Persist a request's time before it is sent, so a crash cannot forget it."""
        with self.transaction() as c:
            c.execute("UPDATE feeds SET last_request = ? WHERE feed_id = ?", (at, feed_id))

    def record_success(self, feed_id: str, at: float, name: str | None) -> None:
        """A good answer: failures reset."""
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET last_success = ?, failures = 0, error_kind = NULL, "
                "last_error = NULL, not_before = NULL, name = COALESCE(?, name) "
                "WHERE feed_id = ?",
                (at, name, feed_id),
            )

    def record_failure(
        self, feed_id: str, at: float, kind: str, error: str, not_before: float | None
    ) -> int:
        """A failed request; returns the number of consecutive failures."""
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET last_failure = ?, failures = failures + 1, error_kind = ?, "
                "last_error = ?, not_before = ? WHERE feed_id = ?",
                (at, kind, error, not_before, feed_id),
            )
            row = c.execute("SELECT failures FROM feeds WHERE feed_id = ?", (feed_id,)).fetchone()
        return int(row["failures"]) if row else 0

    def mark_synced(self, feed_id: str, at: float) -> None:
        """The feed's history has been read once: later messages are news."""
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET synced_at = ? WHERE feed_id = ? AND synced_at IS NULL",
                (at, feed_id),
            )

    def set_feed_told(self, feed_id: str, told: str) -> None:
        """Remember what the admins were last told about this feed."""
        with self.transaction() as c:
            c.execute("UPDATE feeds SET told = ? WHERE feed_id = ?", (told, feed_id))

    # -- messages -----------------------------------------------------------

    def insert_messages(
        self, feed_id: str, messages: Sequence[Message], received_at: float, *, initial: bool
    ) -> list[Message]:
        """Store messages not seen before (by SPOT id); returns the new ones."""
        new: list[Message] = []
        with self.transaction() as c:
            for m in messages:
                cur = c.execute(
                    f"INSERT OR IGNORE INTO messages({_MESSAGE_COLUMNS}) "  # noqa: S608 (constant)
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.id, feed_id, m.messenger_id, m.messenger_name, m.unix_time, m.type,
                        m.latitude, m.longitude, m.altitude, m.model_id, m.battery, m.content,
                        m.date_time, json.dumps(dict(m.extra)), received_at, int(initial),
                    ),
                )  # fmt: skip
                if cur.rowcount == 1:
                    new.append(m)
            self._update_devices(c, feed_id, new)
        return new

    @staticmethod
    def _update_devices(c: sqlite3.Connection, feed_id: str, new: Sequence[Message]) -> None:
        by_device: dict[str, list[Message]] = {}
        for m in new:
            by_device.setdefault(m.messenger_id, []).append(m)
        for device_id, msgs in by_device.items():
            row = c.execute(
                "SELECT last_message_id, last_time, recent_times, last_by_type FROM devices "
                "WHERE messenger_id = ?",
                (device_id,),
            ).fetchone()
            newest = max(msgs, key=lambda m: (m.unix_time, m.id))
            times = json.loads(row["recent_times"]) if row else []
            by_type: dict[str, int] = json.loads(row["last_by_type"]) if row else {}
            for m in msgs:
                by_type[m.type] = max(by_type.get(m.type, m.unix_time), m.unix_time)
            last_id, last_time = (row["last_message_id"], row["last_time"]) if row else (None, None)
            if last_time is None or (newest.unix_time, newest.id) > (last_time, last_id):
                last_id, last_time = newest.id, newest.unix_time
            c.execute(
                "INSERT OR REPLACE INTO devices(messenger_id, name, feed_id, last_message_id, "
                "last_time, recent_times, last_by_type) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    device_id, newest.messenger_name, feed_id, last_id, last_time,
                    json.dumps(merge_recent_times(times, (m.unix_time for m in msgs))),
                    json.dumps(by_type, sort_keys=True),
                ),
            )  # fmt: skip

    def known_before(self, ids: Iterable[int], before: float) -> set[int]:
        """Which of `ids` were stored before `before` (the catch-up's stop condition)."""
        id_list = list(ids)
        if not id_list:
            return set()
        marks = ",".join("?" * len(id_list))
        rows = self._query(
            f"SELECT id FROM messages WHERE id IN ({marks}) AND received_at < ?",  # noqa: S608
            (*id_list, before),
        )
        return {r["id"] for r in rows}

    def pending(self, limit: int = 5000) -> list[Received]:
        """Stored messages the engine has not processed, oldest first."""
        rows = self._query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE processed_at IS NULL "  # noqa: S608
            "ORDER BY unix_time, id LIMIT ?",
            (limit,),
        )
        return [_received(r) for r in rows]

    def messages_by_id(self, ids: Iterable[int]) -> dict[int, Received]:
        """Stored messages by SPOT id."""
        id_list = [i for i in set(ids) if i is not None]
        if not id_list:
            return {}
        marks = ",".join("?" * len(id_list))
        rows = self._query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id IN ({marks})",  # noqa: S608
            id_list,
        )
        return {r["id"]: _received(r) for r in rows}

    def track(self, device: str, since: float | None = None) -> list[Received]:
        """A device's stored messages (by id or name), oldest first."""
        rows = self._query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "  # noqa: S608
            "WHERE (messenger_id = ? OR messenger_name = ?) AND unix_time >= ? "
            "ORDER BY unix_time, id",
            (device, device, since or 0),
        )
        return [_received(r) for r in rows]

    def message_counts(self) -> dict[str, int]:
        """Stored messages per feed (counts the archive: for `status`, not the hot path)."""
        rows = self._query("SELECT feed_id, COUNT(*) AS n FROM messages GROUP BY feed_id")
        return {r["feed_id"]: r["n"] for r in rows}

    def message_count(self) -> int:
        """How many messages the archive holds."""
        return int(self._query("SELECT COUNT(*) AS n FROM messages")[0]["n"])

    # -- devices and incidents ----------------------------------------------

    def devices(self) -> dict[str, Device]:
        """Every device with its latest message."""
        rows = self._query("SELECT * FROM devices")
        last = self.messages_by_id(r["last_message_id"] for r in rows)
        return {
            r["messenger_id"]: Device(
                id=r["messenger_id"],
                name=r["name"],
                feed_id=r["feed_id"],
                last=last.get(r["last_message_id"]),
                recent_times=tuple(json.loads(r["recent_times"])),
                last_by_type=json.loads(r["last_by_type"]),
            )
            for r in rows
        }

    def incidents(self, *, resolved_since: float | None = None) -> list[Incident]:
        """Open incidents, plus those resolved since `resolved_since` when given."""
        rows = self._query(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents "  # noqa: S608
            "WHERE state != 'resolved' OR resolved_at >= ? ORDER BY id",
            (float("inf") if resolved_since is None else resolved_since,),
        )
        return [_incident(r) for r in rows]

    def next_incident_id(self) -> int:
        """The id the next new incident gets (the engine assigns it; one processor runs)."""
        return int(self._query("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM incidents")[0]["n"])

    def events(self, incident_id: int) -> list[EngineEvent]:
        """An incident's history."""
        rows = self._query(
            "SELECT * FROM incident_events WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [
            EngineEvent(
                r["incident_id"], r["at"], r["reason"], r["message_id"], bool(r["notified"])
            )
            for r in rows
        ]

    def commit_evaluation(
        self,
        *,
        processed: Sequence[int],
        incidents: Sequence[Incident],
        events: Sequence[EngineEvent],
        outgoing: Sequence[Outgoing],
        at: float,
    ) -> None:
        """The engine's output, the messages' processed marks and the outbox rows, atomically."""
        with self.transaction() as c:
            # An upsert, not INSERT OR REPLACE: REPLACE would also settle a clash on
            # `incidents_one_open` by deleting the other open incident, silently.
            c.executemany(
                f"INSERT INTO incidents({_INCIDENT_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT(id) DO UPDATE SET {_INCIDENT_UPDATE}",
                [
                    (
                        i.id, i.device_id, i.rule, i.state.value, i.started_at, i.opened_at,
                        i.updated_at, i.first_message_id, i.last_message_id, i.last_notified_at,
                        i.reminders, i.updates, i.escalation, int(i.late), i.resolved_at,
                        i.resolved_by_message_id,
                    )
                    for i in incidents
                ],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO incident_events(incident_id, at, reason, message_id, notified) "
                "VALUES (?, ?, ?, ?, ?)",
                [(e.incident_id, e.at, e.reason, e.message_id, int(e.notified)) for e in events],
            )
            self._write_outgoing(c, outgoing, at)
            c.executemany(
                "UPDATE messages SET processed_at = ? WHERE id = ?", [(at, i) for i in processed]
            )

    # -- outbox -------------------------------------------------------------

    def enqueue(self, outgoing: Sequence[Outgoing], at: float) -> None:
        """Write notifications that belong to no engine decision (admin notices)."""
        with self.transaction() as c:
            self._write_outgoing(c, outgoing, at)

    @staticmethod
    def _write_outgoing(c: sqlite3.Connection, outgoing: Sequence[Outgoing], at: float) -> None:
        for o in outgoing:
            r = o.rendered
            cur = c.execute(
                "INSERT INTO notifications(incident_id, created_at, kind, title, body, short, "
                "severity, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (o.incident_id, at, o.kind, r.title, r.body, r.short, r.severity.value,
                 int(o.resolution)),
            )  # fmt: skip
            c.executemany(
                "INSERT INTO deliveries(notification_id, target, label, short, next_attempt) "
                "VALUES (?, ?, ?, ?, ?)",
                [(cur.lastrowid, t, label, int(short), at) for t, label, short in o.targets],
            )

    def due_deliveries(self, now: float, limit: int = 200) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest notification first."""
        rows = self._query(
            "SELECT d.*, n.incident_id, n.title, n.body, n.short AS short_text, n.severity, "
            "n.kind, n.resolution, n.created_at, i.state AS incident_state "
            "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "LEFT JOIN incidents i ON i.id = n.incident_id "
            "WHERE d.state = 'pending' AND d.next_attempt <= ? "
            "ORDER BY d.notification_id, d.id LIMIT ?",
            (now, limit),
        )
        return [
            Delivery(
                id=r["id"],
                notification_id=r["notification_id"],
                incident_id=r["incident_id"],
                target=r["target"],
                label=r["label"],
                short=bool(r["short"]),
                attempts=r["attempts"],
                next_attempt=r["next_attempt"],
                title=r["title"],
                body=r["body"],
                short_text=r["short_text"],
                severity=r["severity"],
                kind=r["kind"],
                resolution=bool(r["resolution"]),
                incident_state=r["incident_state"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery is due."""
        rows = self._query("SELECT MIN(next_attempt) AS t FROM deliveries WHERE state = 'pending'")
        return rows[0]["t"] if rows else None

    def pending_before(self, target: str, notification_id: int) -> bool:
        """Whether an older notification is still owed to this target (keep order per target)."""
        rows = self._query(
            "SELECT 1 FROM deliveries WHERE target = ? AND state = 'pending' "
            "AND notification_id < ? LIMIT 1",
            (target, notification_id),
        )
        return bool(rows)

    def mark_sent(self, delivery_id: int, at: float) -> None:
        """Record a delivery (only after the target accepted it)."""
        with self.transaction() as c:
            c.execute(
                "UPDATE deliveries SET state = 'sent', sent_at = ?, attempts = attempts + 1, "
                "last_error = NULL WHERE id = ?",
                (at, delivery_id),
            )

    def mark_failed(self, delivery_id: int, error: str, next_attempt: float) -> None:
        """Record a failed attempt and when to try again."""
        with self.transaction() as c:
            c.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ? "
                "WHERE id = ?",
                (error, next_attempt, delivery_id),
            )

    def drop_delivery(self, delivery_id: int, why: str) -> None:
        """Give up a delivery that no longer matters (its incident is over)."""
        with self.transaction() as c:
            c.execute(
                "UPDATE deliveries SET state = 'dropped', last_error = ? WHERE id = ?",
                (why, delivery_id),
            )

    def drop_obsolete(self, why: str) -> int:
        """Drop pending alerts of resolved incidents (their resolutions stay); how many."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE deliveries SET state = 'dropped', last_error = ? "
                "WHERE state = 'pending' AND notification_id IN ("
                "  SELECT n.id FROM notifications n JOIN incidents i ON i.id = n.incident_id"
                "  WHERE i.state = 'resolved' AND n.resolution = 0)",
                (why,),
            )
        return cur.rowcount

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries by state."""
        rows = self._query("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def oldest_pending_delivery(self) -> float | None:
        """When the oldest still-pending notification was created."""
        rows = self._query(
            "SELECT MIN(n.created_at) AS t FROM deliveries d "
            "JOIN notifications n ON n.id = d.notification_id WHERE d.state = 'pending'"
        )
        return rows[0]["t"] if rows else None

    def target_health(self, target: str) -> TargetHealth | None:
        """A target's delivery record."""
        rows = self._query("SELECT * FROM targets WHERE target = ?", (target,))
        if not rows:
            return None
        r = rows[0]
        return TargetHealth(
            r["target"], r["label"], r["failures"], r["failing_since"], bool(r["told"])
        )

    def set_target_health(self, health: TargetHealth) -> None:
        """Store a target's delivery record."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO targets(target, label, failures, failing_since, told) "
                "VALUES (?, ?, ?, ?, ?)",
                (health.target, health.label, health.failures, health.failing_since,
                 int(health.told)),
            )  # fmt: skip
