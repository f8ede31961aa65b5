"""The archive: feeds (request times, health), every message, and each device's rhythm."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from alerter.models import (
    Device,
    FeedErrorKind,
    FeedState,
    FeedStatus,
    Message,
    Received,
)
from alerter.rhythm import Rhythm, advance
from alerter.store.db import Database

_MESSAGE_COLUMNS = (
    "id, feed_id, messenger_id, messenger_name, unix_time, type, latitude, longitude, "
    "altitude, model_id, battery, content, date_time, extra, received_at, initial"
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


class Archive(Database):
    """Feeds, messages and devices."""

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
                error_kind=FeedErrorKind(r["error_kind"]) if r["error_kind"] else None,
                last_error=r["last_error"],
                not_before=r["not_before"],
                synced_at=r["synced_at"],
                watched_since=r["watched_since"],
                told=FeedStatus(r["told"]),
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
        self, feed_id: str, at: float, kind: FeedErrorKind, error: str, not_before: float | None
    ) -> None:
        """A failed request."""
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET last_failure = ?, failures = failures + 1, error_kind = ?, "
                "last_error = ?, not_before = ? WHERE feed_id = ?",
                (at, kind.value, error, not_before, feed_id),
            )

    def mark_synced(self, feed_id: str, at: float) -> None:
        """The feed's history has been read once: later messages are news."""
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET synced_at = ? WHERE feed_id = ? AND synced_at IS NULL",
                (at, feed_id),
            )

    def set_feed_told(self, feed_id: str, told: FeedStatus) -> None:
        """Remember what the admins were last told about this feed."""
        with self.transaction() as c:
            c.execute("UPDATE feeds SET told = ? WHERE feed_id = ?", (told.value, feed_id))

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
            old = (
                Rhythm(
                    row["last_message_id"], row["last_time"],
                    tuple(json.loads(row["recent_times"])), json.loads(row["last_by_type"]),
                )
                if row
                else Rhythm()
            )  # fmt: skip
            rhythm = advance(old, msgs)
            name = max(msgs, key=lambda m: (m.unix_time, m.id)).messenger_name
            c.execute(
                "INSERT OR REPLACE INTO devices(messenger_id, name, feed_id, last_message_id, "
                "last_time, recent_times, last_by_type) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    device_id, name, feed_id, rhythm.last_message_id, rhythm.last_time,
                    json.dumps(list(rhythm.recent_times)),
                    json.dumps(rhythm.last_by_type, sort_keys=True),
                ),
            )  # fmt: skip

    def known_before(self, ids: Iterable[int], before: float) -> set[int]:
        """Which of `ids` were stored before `before` (the catch-up's stop condition)."""
        id_list = list(ids)
        if not id_list:
            return set()
        rows = self._query(
            "SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?)) "
            "AND received_at < ?",
            (json.dumps(id_list), before),
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

    def set_aside(self, message_id: int, why: str, at: float) -> None:
        """Take a message that cannot be decided out of the pending ones, with the reason."""
        with self.transaction() as c:
            c.execute(
                "UPDATE messages SET processed_at = ?, set_aside = ? WHERE id = ?",
                (at, why, message_id),
            )

    def messages_by_id(self, ids: Iterable[int]) -> dict[int, Received]:
        """Stored messages by SPOT id."""
        id_list = [i for i in set(ids) if i is not None]
        if not id_list:
            return {}
        # One SQL text whatever the number of ids: an `IN (?, ?, ...)` per count would be
        # a new prepared statement each time, and sqlite3 keeps the last 128 of them
        # (measured: the service grew 12.8 KB an alert until this).
        rows = self._query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "  # noqa: S608 (constant)
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(id_list),),
        )
        return {r["id"]: _received(r) for r in rows}

    def message_counts(self) -> dict[str, int]:
        """Stored messages per feed (counts the archive: for `status`, not the hot path)."""
        rows = self._query("SELECT feed_id, COUNT(*) AS n FROM messages GROUP BY feed_id")
        return {r["feed_id"]: r["n"] for r in rows}

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

    def track(self, device: str, since: float | None, until: float | None) -> list[Received]:
        """A device's stored messages (by messenger id), oldest first; `since` and
        `until` bound their time (`unix_time`), both included, when given."""
        where: list[str] = ["messenger_id = ?"]
        params: list[object] = [device]
        if since is not None:
            where.append("unix_time >= ?")
            params.append(since)
        if until is not None:
            where.append("unix_time <= ?")
            params.append(until)
        rows = self._query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY unix_time, id",
            params,
        )
        return [_received(r) for r in rows]

    def prune(self, before: float) -> int:
        """Forget what is older than `before`, in one transaction; returns how many
        messages went. Kept whatever their age:

        - every message the engine has not processed yet, and every message received at
          or after `before` (a late one carrying an old time);
        - each device's latest message (`devices.last_message_id`);
        - every message an incident that stays refers to (first, last, resolved by, or
          one of its events), so no open or acknowledged incident loses its messages;
        - open and acknowledged incidents; resolved ones with anything at or after
          `before` (resolution, event, notification) or a pending delivery; and the
          newest incident, so an incident id is never given out twice.

        A resolved incident older than that goes whole: its deliveries, notifications
        and events first (the foreign keys hold at every step). So do admin notices
        (notifications of no incident) created before `before` with nothing pending.
        Devices and feeds stay. Freed pages are reused; the file does not shrink.
        """
        with self.transaction() as c:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS prune_incidents (id INTEGER PRIMARY KEY)")
            c.execute("DELETE FROM temp.prune_incidents")
            c.execute(
                "INSERT INTO temp.prune_incidents(id) SELECT i.id FROM incidents i "
                "WHERE i.state = 'resolved' AND i.resolved_at < :before "
                "AND i.id < (SELECT MAX(id) FROM incidents) "
                "AND NOT EXISTS (SELECT 1 FROM incident_events e "
                "    WHERE e.incident_id = i.id AND e.at >= :before) "
                "AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = i.id "
                "    AND (n.created_at >= :before OR EXISTS (SELECT 1 FROM deliveries d "
                "        WHERE d.notification_id = n.id AND d.state = 'pending')))",
                {"before": before},
            )
            c.execute(
                "DELETE FROM deliveries WHERE notification_id IN (SELECT n.id FROM notifications n "
                "WHERE n.incident_id IN (SELECT id FROM temp.prune_incidents) "
                "OR (n.incident_id IS NULL AND n.created_at < :before AND NOT EXISTS ("
                "    SELECT 1 FROM deliveries d WHERE d.notification_id = n.id "
                "    AND d.state = 'pending')))",
                {"before": before},
            )
            c.execute(
                "DELETE FROM notifications WHERE incident_id IN "
                "(SELECT id FROM temp.prune_incidents) "
                "OR (incident_id IS NULL AND created_at < :before AND NOT EXISTS ("
                "    SELECT 1 FROM deliveries d WHERE d.notification_id = notifications.id))",
                {"before": before},
            )
            c.execute(
                "DELETE FROM incident_events WHERE incident_id IN "
                "(SELECT id FROM temp.prune_incidents)"
            )
            c.execute("DELETE FROM incidents WHERE id IN (SELECT id FROM temp.prune_incidents)")
            c.execute("DROP TABLE temp.prune_incidents")
            cur = c.execute(
                "DELETE FROM messages WHERE unix_time < :before AND received_at < :before "
                "AND processed_at IS NOT NULL "
                "AND id NOT IN (SELECT last_message_id FROM devices "
                "    WHERE last_message_id IS NOT NULL) "
                "AND id NOT IN (SELECT first_message_id FROM incidents "
                "    WHERE first_message_id IS NOT NULL "
                "    UNION SELECT last_message_id FROM incidents WHERE last_message_id IS NOT NULL "
                "    UNION SELECT resolved_by_message_id FROM incidents "
                "        WHERE resolved_by_message_id IS NOT NULL "
                "    UNION SELECT message_id FROM incident_events WHERE message_id IS NOT NULL)",
                {"before": before},
            )
            return cur.rowcount
