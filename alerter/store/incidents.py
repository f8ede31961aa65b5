"""Incidents and their history; the engine's output committed in one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from alerter.models import EngineEvent, HeldBack, Incident, IncidentState, Outgoing, Reason
from alerter.store.db import Database
from alerter.store.outbox import write_outgoing

_INCIDENT_COLUMNS = (
    "id, device_id, rule, state, started_at, opened_at, updated_at, first_message_id, "
    "last_message_id, last_notified_at, reminders, updates, escalation, late, resolved_at, "
    "resolved_by_message_id"
)


_INCIDENT_UPDATE = ", ".join(
    f"{col} = excluded.{col}" for col in _INCIDENT_COLUMNS.replace(" ", "").split(",")[1:]
)


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


class Incidents(Database):
    """Incidents, their events, and the atomic commit of an evaluation."""

    def incidents(
        self,
        *,
        resolved_since: float | None = None,
        devices: Collection[str] | None = None,
        rules: Collection[str] = (),
    ) -> list[Incident]:
        """Open incidents, plus those resolved since `resolved_since` when given: of every
        device, or only of `devices` and of `rules` (what one evaluation can need)."""
        since = float("inf") if resolved_since is None else resolved_since
        if devices is None:
            rows = self._query(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents "  # noqa: S608
                "WHERE state != 'resolved' OR resolved_at >= ? ORDER BY id",
                (since,),
            )
        else:
            rows = self._query(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents "  # noqa: S608
                "WHERE state != 'resolved' OR (resolved_at >= ? AND ("
                "  device_id IN (SELECT value FROM json_each(?))"
                "  OR rule IN (SELECT value FROM json_each(?)))) ORDER BY id",
                (since, json.dumps(sorted(devices)), json.dumps(sorted(rules))),
            )
        return [_incident(r) for r in rows]

    def next_incident_id(self) -> int:
        """The id the next new incident gets (the engine assigns it; one processor runs)."""
        return int(self._query("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM incidents")[0]["n"])

    def history(self, incident_id: int) -> list[EngineEvent]:
        """An incident's history, oldest first: each decision, and why nobody was told."""
        rows = self._query(
            "SELECT * FROM incident_events WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [
            EngineEvent(
                r["incident_id"], r["at"], Reason(r["reason"]), r["message_id"],
                bool(r["notified"]), HeldBack(r["held_back"]) if r["held_back"] else None,
            )
            for r in rows
        ]  # fmt: skip

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
                "INSERT INTO incident_events(incident_id, at, reason, message_id, notified, "
                "held_back) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (e.incident_id, e.at, e.reason.value, e.message_id, int(e.notified),
                     e.held_back.value if e.held_back else None)
                    for e in events
                ],
            )  # fmt: skip
            write_outgoing(c, outgoing, at)
            c.executemany(
                "UPDATE messages SET processed_at = ? WHERE id = ?", [(at, i) for i in processed]
            )
