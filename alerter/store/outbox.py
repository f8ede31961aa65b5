"""The outbox: notifications, their deliveries (one per target) and each target's health.

A notification is written with its deliveries in the transaction of the decision (or
admin notice) behind it; a delivery is marked sent only after its target accepted it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from alerter.models import (
    Delivery,
    DeliveryRecord,
    DeliveryState,
    IncidentState,
    Outgoing,
    Severity,
    TargetHealth,
)
from alerter.store.db import Database


def write_outgoing(c: sqlite3.Connection, outgoing: Sequence[Outgoing], at: float) -> None:
    """Insert notifications and their deliveries inside the caller's transaction."""
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


def _target_health(r: sqlite3.Row) -> TargetHealth:
    return TargetHealth(r["target"], r["label"], r["failures"], r["failing_since"], bool(r["told"]))


class Outbox(Database):
    """Notifications, deliveries and target health."""

    def enqueue(self, outgoing: Sequence[Outgoing], at: float) -> None:
        """Write notifications that belong to no engine decision (admin notices)."""
        with self.transaction() as c:
            write_outgoing(c, outgoing, at)

    def pending_deliveries(self, due_by: float = float("inf"), limit: int = 5000) -> list[Delivery]:
        """Pending deliveries (those due by `due_by`, else all), oldest notification first."""
        rows = self._query(
            "SELECT d.*, n.incident_id, n.title, n.body, n.short AS short_text, n.severity, "
            "n.kind, n.resolution, n.created_at, i.state AS incident_state "
            "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "LEFT JOIN incidents i ON i.id = n.incident_id "
            "WHERE d.state = 'pending' AND d.next_attempt <= ? "
            "ORDER BY d.notification_id, d.id LIMIT ?",
            (due_by, limit),
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
                severity=Severity(r["severity"]),
                kind=r["kind"],
                resolution=bool(r["resolution"]),
                incident_state=(
                    IncidentState(r["incident_state"]) if r["incident_state"] else None
                ),
                created_at=r["created_at"],
            )
            for r in rows
        ]

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

    def deliveries_of(self, incident_ids: Sequence[int]) -> list[DeliveryRecord]:
        """Every delivery of these incidents' notifications, oldest notification first."""
        rows = self._query(
            "SELECT n.id, n.incident_id, n.created_at, n.kind, n.title, d.label, d.state, "
            "d.sent_at, d.attempts, d.last_error FROM notifications n "
            "JOIN deliveries d ON d.notification_id = n.id "
            "WHERE n.incident_id IN (SELECT value FROM json_each(?)) ORDER BY n.id, d.id",
            (json.dumps(list(incident_ids)),),
        )
        return [
            DeliveryRecord(
                r["id"], r["incident_id"], r["created_at"], r["kind"], r["title"], r["label"],
                DeliveryState(r["state"]), r["sent_at"], r["attempts"], r["last_error"],
            )
            for r in rows
        ]  # fmt: skip

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

    def oldest_unheard(self) -> float | None:
        """When the oldest notification that no target has taken yet was written: one
        still pending everywhere (a notification some target took was heard). Read every
        cycle: it starts from the pending deliveries (indexed), not from the history."""
        rows = self._query(
            "SELECT MIN(n.created_at) AS t FROM notifications n "
            "WHERE n.id IN (SELECT notification_id FROM deliveries WHERE state = 'pending') "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id "
            "                AND d.state = 'sent')"
        )
        return rows[0]["t"] if rows else None

    def target_healths(self) -> list[TargetHealth]:
        """Every target the outbox has a record of, by label."""
        rows = self._query("SELECT * FROM targets ORDER BY label")
        return [_target_health(r) for r in rows]

    def target_health(self, target: str) -> TargetHealth | None:
        """A target's delivery record."""
        rows = self._query("SELECT * FROM targets WHERE target = ?", (target,))
        return _target_health(rows[0]) if rows else None

    def set_target_health(self, health: TargetHealth) -> None:
        """Store a target's delivery record."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO targets(target, label, failures, failing_since, told) "
                "VALUES (?, ?, ?, ?, ?)",
                (health.target, health.label, health.failures, health.failing_since,
                 int(health.told)),
            )  # fmt: skip
