"""Incidents and their history; the engine's output committed in one transaction.

Two processes may write incidents: `alerter run` (the engine's decisions) and `alerter ack`
(an acknowledgement beside the running service, through SQLite's WAL). So an
acknowledgement is a conditional write (only an incident still open is taken), and the
engine's upsert never turns an acknowledged incident back to open (a decision made on a
snapshot read just before someone took it); the acknowledgement columns are written only
by `commit_evaluation(acknowledge=...)`.
"""

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


# Read with the incident; written only by an acknowledgement (never by the engine's upsert).
_ACK_COLUMNS = "acknowledged_by, acknowledged_at, acknowledged_via"
_INCIDENT_READ = f"{_INCIDENT_COLUMNS}, {_ACK_COLUMNS}"


_INCIDENT_UPDATE = ", ".join(
    # An acknowledgement written meanwhile (by `alerter ack`) is never undone by a decision
    # made on an older snapshot: the engine itself never reopens an incident.
    "state = CASE WHEN incidents.state = 'acknowledged' AND excluded.state = 'open' "
    "THEN incidents.state ELSE excluded.state END"
    if col == "state"
    else f"{col} = excluded.{col}"
    for col in _INCIDENT_COLUMNS.replace(" ", "").split(",")[1:]
)


class _NotOpen(Exception):  # a signal inside one transaction, never raised out
    """The incident to acknowledge is no longer open: the transaction is rolled back."""


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
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_via=row["acknowledged_via"],
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
        everyone = devices is None  # resolved ones of every device, or only those named
        rows = self._query(
            f"SELECT {_INCIDENT_READ} FROM incidents "  # noqa: S608
            "WHERE state != 'resolved' OR (resolved_at >= ? AND (?"
            "  OR device_id IN (SELECT value FROM json_each(?))"
            "  OR rule IN (SELECT value FROM json_each(?)))) ORDER BY id",
            (since, everyone, json.dumps(sorted(devices or ())), json.dumps(sorted(rules))),
        )
        return [_incident(r) for r in rows]

    def incident(self, incident_id: int) -> Incident | None:
        """One incident by id, whatever its state; None when there is none."""
        rows = self._query(
            f"SELECT {_INCIDENT_READ} FROM incidents WHERE id = ?",  # noqa: S608
            (incident_id,),
        )
        return _incident(rows[0]) if rows else None

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
        acknowledge: Incident | None = None,
    ) -> bool:
        """The engine's output, the messages' processed marks and the outbox rows, atomically.

        `acknowledge`: the incident as someone took it (its state, `acknowledged_*` and
        `last_notified_at` are written, nothing else of it). It is taken only if it is
        still open when the transaction runs; if not (taken or resolved meanwhile, by
        another process), nothing at all is written and this returns False.
        """
        try:
            with self.transaction() as c:
                if acknowledge is not None:
                    self._take(c, acknowledge)
                self._write_evaluation(c, processed, incidents, events, outgoing, at)
        except _NotOpen:
            return False
        return True

    @staticmethod
    def _take(c: sqlite3.Connection, inc: Incident) -> None:
        """Acknowledge `inc` inside the caller's transaction, only if it is still open."""
        cur = c.execute(
            "UPDATE incidents SET state = ?, acknowledged_by = ?, acknowledged_at = ?, "
            "acknowledged_via = ?, last_notified_at = ? WHERE id = ? AND state = ?",
            (inc.state.value, inc.acknowledged_by, inc.acknowledged_at, inc.acknowledged_via,
             inc.last_notified_at, inc.id, IncidentState.OPEN.value),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise _NotOpen

    @staticmethod
    def _write_evaluation(
        c: sqlite3.Connection,
        processed: Sequence[int],
        incidents: Sequence[Incident],
        events: Sequence[EngineEvent],
        outgoing: Sequence[Outgoing],
        at: float,
    ) -> None:
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
