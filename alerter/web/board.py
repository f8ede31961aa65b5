"""The incident board's content: `alerter.report`'s report, and what only the board shows.

Reads only. To the report's open incidents it adds who took each one and its latest
notifications with who each reached (or why not yet); it adds the incidents resolved in
the last `RECENT` seconds in the same shape, each device's latest message text, and
whether the device has an open incident (`open`). Every text that may quote a secret (a
delivery error, a label) is masked again, as the report's own texts are.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from alerter import report
from alerter.models import Incident
from alerter.settings import Settings
from alerter.store import Store
from alerter.vitals import Health

#: How long a resolved incident stays on the board (seconds).
RECENT = 24 * 3600.0
#: How many of an incident's latest notifications the board lists.
NOTIFICATIONS = 10


def gather(store: Store, settings: Settings, now: float, health: Health) -> report.Report:
    """The report with the board's additions (see the module's docstring)."""
    built = report.build(store, settings, now, health)
    incidents = {i.id: i for i in store.incidents(resolved_since=now - RECENT)}
    devices = store.devices()
    resolved = sorted(
        (i for i in incidents.values() if not i.is_open),
        key=lambda i: i.resolved_at or 0.0,
        reverse=True,
    )
    recent = [_entry(store, i, devices[i.device_id].name if i.device_id in devices else None)
              for i in resolved]  # fmt: skip
    every = [*built["incidents"], *recent]
    sent = _notifications(store, [e["id"] for e in every], settings)
    for entry in every:
        incident = incidents.get(entry["id"])
        entry["taken_by"] = getattr(incident, "acknowledged_by", None)
        entry["taken_at"] = report.iso(getattr(incident, "acknowledged_at", None))
        entry["resolved_at"] = report.iso(incident.resolved_at if incident else None)
        entry["notifications"] = sent.get(entry["id"], [])
    built["recent_incidents"] = recent

    open_devices = {e["device"]["id"] for e in built["incidents"]}
    for d in built["devices"]:
        device = devices.get(d["id"])
        last = device.last.message if device and device.last else None
        d["text"] = last.content if last else None
        d["open"] = d["id"] in open_devices
    return built


def _entry(store: Store, i: Incident, name: str | None) -> dict[str, Any]:
    """A resolved incident in the report's shape."""
    events = store.history(i.id or 0)[-report.HISTORY :]
    return {
        "id": i.id,
        "rule": i.rule,
        "device": {"name": name or i.device_id, "id": i.device_id},
        "state": i.state.value,
        "since": report.iso(i.started_at),
        "opened_at": report.iso(i.opened_at),
        "late": i.late,
        "last_notified_at": report.iso(i.last_notified_at),
        "reminders": i.reminders,
        "updates": i.updates,
        "escalation": i.escalation,
        "events": [
            {
                "at": report.iso(e.at),
                "reason": e.reason.value,
                "message_id": e.message_id,
                "notified": e.notified,
                "held_back": e.held_back.value if e.held_back else None,
            }
            for e in events
        ],
    }


def _notifications(
    store: Store, incident_ids: list[Any], settings: Settings
) -> dict[int, list[dict[str, Any]]]:
    """Each incident's latest notifications, oldest first, with their deliveries."""
    if not incident_ids:
        return {}
    by_id: dict[int, dict[str, Any]] = {}
    per_incident: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in store.deliveries_of(incident_ids):
        note = by_id.get(d.notification_id)
        if note is None:
            note = by_id[d.notification_id] = {
                "at": report.iso(d.created_at),
                "kind": d.kind,
                "title": d.title,
                "deliveries": [],
            }
            per_incident[d.incident_id].append(note)
        note["deliveries"].append(
            {
                "label": report.masked(d.label, settings),
                "state": d.state.value,
                "sent_at": report.iso(d.sent_at),
                "attempts": d.attempts,
                "error": report.masked(d.last_error, settings) if d.last_error else None,
            }
        )
    return {k: v[-NOTIFICATIONS:] for k, v in per_incident.items()}
