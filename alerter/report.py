"""What `alerter status`, `alerter status --json` and `/status` say: one report, built here.

`build` reads the store (no writes) and returns a dict ready for JSON: each feed's health
(named by its display name, never its id), each device's last message and position, the
open incidents with their latest history (and why nobody was told), the outbox, the
targets' health, the health verdict, and `needs_admin`: what an admin must look at (a
watched feed failing or blocked, a target failing that the admins were told of, an
incident open). `text` renders the same report for a terminal. Every error text in it is
masked (`alerter.masking`), with the settings' own secrets added, so the report never
depends on who registered them.

The verdict is the service's own (`vitals.verdict`) when the running service builds the
report (`/status`); `state_health` judges the same vitals as far as the state database
knows them, for the command line: the processing loop's last cycle is then the state
watch's last write probe (the service writes it at least every 30 s).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from alerter import masking, metrics
from alerter.durations import ago
from alerter.health import feed_status
from alerter.models import DeliveryState, FeedStatus
from alerter.settings import Settings, mask_id
from alerter.store import Store
from alerter.vitals import Health, Vitals, verdict

#: How many of an open incident's latest events the report shows.
HISTORY = 10

Report = dict[str, Any]


# -- small helpers --------------------------------------------------------------------------


def iso(t: float | None) -> str | None:
    """POSIX seconds as ISO 8601 UTC (`...Z`), None as None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def unix(s: str | None) -> float | None:
    """`iso` read back."""
    return None if s is None else datetime.fromisoformat(s).timestamp()


def secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold (masked in the report even when not registered)."""
    found = [f.password.get_secret_value() for f in settings.feeds if f.password]
    for value in (settings.status_token, settings.secret_key, settings.heartbeat_url):
        if value is not None:
            text = value.get_secret_value()
            found.extend(masking.url_secrets(text) if "://" in text else [text])
    return found


def masked(text: str, settings: Settings) -> str:
    """`text` masked by the registry and the settings' secrets."""
    return masking.mask(text, *secrets(settings))


def started_at(store: Store) -> float:
    """When the service last started (0 when it never did)."""
    return float(store.get_meta("started_at") or 0)


def health_json(health: Health, now: float) -> dict[str, Any]:
    """The verdict as `/healthz` and the report show it."""
    return {
        "status": "ok" if health.healthy else "unhealthy",
        "blind": health.blind,
        "reasons": list(health.reasons),
        "checked_at": iso(now),
    }


# -- the verdict as the state knows it ---------------------------------------------------------


def feed_statuses(store: Store, settings: Settings, now: float) -> dict[str, FeedStatus]:
    """Each watched feed's status by display name (all stored feeds when none is set)."""
    states = store.feed_states()
    names = settings.feed_names({fid: st.name for fid, st in states.items()})
    started = started_at(store)
    return {
        names[fid]: feed_status(st, now, started, settings.feed_failing_after)
        for fid, st in states.items()
        if _watched(fid, settings)
    }


def state_health(store: Store, settings: Settings, now: float, *, stuck_after: float) -> Health:
    """`vitals.verdict` on what the state database knows (for the command line)."""
    probe = store.get_meta("probe")
    vitals = Vitals(
        started_at=started_at(store) or now,
        last_cycle=float(probe) if probe else None,
        feeds=feed_statuses(store, settings, now),
        oldest_pending=store.oldest_unheard(),
    )
    return verdict(vitals, now, interval=settings.poll_interval, stuck_after=stuck_after)


def _watched(feed_id: str, settings: Settings) -> bool:
    return not settings.feeds or any(f.id == feed_id for f in settings.feeds)


# -- the report -------------------------------------------------------------------------------


def build(
    store: Store, settings: Settings, now: float, health: Health, *, judged_by: str = "service"
) -> Report:
    """The report (reads only). `health`: the verdict to show; `judged_by`: whose it is."""
    states = store.feed_states()
    names = settings.feed_names({fid: st.name for fid, st in states.items()})
    counts = store.message_counts()
    started = started_at(store)
    # A service that is stalled, blind or not running needs an admin before anything else.
    needs_admin: list[str] = [
        masked(f"the service: {reason}", settings) for reason in health.reasons
    ]

    feeds = []
    for fid, st in states.items():
        status = feed_status(st, now, started, settings.feed_failing_after)
        watched = _watched(fid, settings)
        if watched and status is not FeedStatus.OK:
            needs_admin.append(f"feed {names[fid]} is {status.value}")
        feeds.append(
            {
                "name": names[fid],
                "status": status.value,
                "watched": watched,
                "last_poll": iso(st.last_request),
                "last_good_answer": iso(st.last_success),
                "failures": st.failures,
                "error_kind": st.error_kind.value if st.failures and st.error_kind else None,
                # Masked again: a row stored by an older version may hold a secret.
                "last_error": masked(st.last_error or "", settings) if st.failures else None,
                "messages_stored": counts.get(fid, 0),
            }
        )

    devices = store.devices()
    device_list = []
    for dev in sorted(devices.values(), key=lambda d: (d.name.lower(), d.id)):
        m = dev.last.message if dev.last else None
        last = None
        if m is not None:
            position = (
                {"latitude": m.latitude, "longitude": m.longitude, "altitude": m.altitude}
                if m.has_position
                else None
            )
            last = {
                "type": m.type,
                "time": iso(m.unix_time),
                "position": position,
                "battery": m.battery,
            }
        device_list.append(
            {
                "name": dev.name,
                "id": dev.id,
                "feed": names.get(dev.feed_id, mask_id(dev.feed_id)),
                "last_message": last,
            }
        )

    incidents = []
    for i in store.incidents():
        if not i.is_open:
            continue
        who = devices[i.device_id].name if i.device_id in devices else i.device_id
        needs_admin.append(f"incident #{i.id} {i.rule} for {who} is {i.state.value}")
        events = store.history(i.id or 0)[-HISTORY:]
        incidents.append(
            {
                "id": i.id,
                "rule": i.rule,
                "device": {"name": who, "id": i.device_id},
                "state": i.state.value,
                "since": iso(i.started_at),
                "opened_at": iso(i.opened_at),
                "late": i.late,
                "last_notified_at": iso(i.last_notified_at),
                "reminders": i.reminders,
                "updates": i.updates,
                "escalation": i.escalation,
                "events": [
                    {
                        "at": iso(e.at),
                        "reason": e.reason.value,
                        "message_id": e.message_id,
                        "notified": e.notified,
                        "held_back": e.held_back.value if e.held_back else None,
                    }
                    for e in events
                ],
            }
        )

    targets = []
    for t in store.target_healths():
        if t.failures and t.told:
            needs_admin.append(f"target {t.label} is failing ({t.failures} attempts)")
        targets.append(
            {
                "label": t.label,
                "failing": t.failures > 0,
                "failures": t.failures,
                "failing_since": iso(t.failing_since),
                "admins_told": t.told,
            }
        )

    deliveries = store.delivery_counts()
    outbox: dict[str, Any] = {s.value: deliveries.get(s.value, 0) for s in DeliveryState}
    outbox["oldest_pending"] = iso(store.oldest_pending_delivery())

    verdict_json = health_json(health, now)
    verdict_json["reasons"] = [masked(r, settings) for r in health.reasons]
    verdict_json["judged_by"] = judged_by
    return {
        "generated_at": iso(now),
        "health": verdict_json,
        "needs_admin": needs_admin,
        "feeds": feeds,
        "devices": device_list,
        "incidents": incidents,
        "targets": targets,
        "outbox": outbox,
    }


def text(report: Mapping[str, Any]) -> str:
    """The report for a terminal (what `alerter status` prints)."""
    now = unix(report["generated_at"]) or 0.0

    def since(s: str | None) -> str:
        return ago(unix(s), now)

    lines = ["feeds:"]
    for f in report["feeds"]:
        err = f"; last error: {f['last_error']} ({f['failures']}x)" if f["failures"] else ""
        lines.append(
            f"  {f['name']}: {f['status']}; last poll {since(f['last_poll'])}; "
            f"last good answer {since(f['last_good_answer'])}; "
            f"{f['messages_stored']} messages stored{err}"
        )
    lines.append("devices:")
    for d in report["devices"]:
        m = d["last_message"]
        if m is None:
            continue
        p = m["position"]
        where = f"{p['latitude']:.5f}, {p['longitude']:.5f}" if p else "no GPS fix"
        battery = f", battery {m['battery']}" if m["battery"] else ""
        lines.append(f"  {d['name']} ({d['id']}): {m['type']} {since(m['time'])}, {where}{battery}")
    incidents = report["incidents"]
    lines.append(f"open incidents: {len(incidents) or 'none'}")
    for i in incidents:
        lines.append(
            f"  #{i['id']} {i['rule']} for {i['device']['name']}: {i['state']} since "
            f"{since(i['since'])}, {i['reminders']} reminders, escalation {i['escalation']}"
        )
        for e in i["events"]:
            told = (
                "notified" if e["notified"] else f"nobody told: {e['held_back'] or 'recorded only'}"
            )
            lines.append(f"    {since(e['at'])}: {e['reason']}; {told}")
    outbox = report["outbox"]
    lines.append("outbox: " + ", ".join(f"{outbox[s.value]} {s.value}" for s in DeliveryState))
    health = report["health"]
    lines.append(
        f"health ({health['judged_by']}): "
        + ("ok" if health["status"] == "ok" else "; ".join(health["reasons"]))
    )
    if report["needs_admin"]:
        lines.append("needs an admin:")
        lines.extend(f"  - {item}" for item in report["needs_admin"])
    return "\n".join(lines)


# -- the gauges /metrics reads at each scrape --------------------------------------------------


def metrics_reading(
    store: Store, settings: Settings, now: float, health: Health
) -> metrics.StateReading:
    """What the state says now, for `metrics.StateCollector`."""
    states = store.feed_states()
    names = settings.feed_names({fid: st.name for fid, st in states.items()})
    silence = {
        names[fid]: now - (st.last_success or st.watched_since or now)
        for fid, st in states.items()
        if _watched(fid, settings)
    }
    oldest = store.oldest_pending_delivery()
    failing: dict[str, bool] = {}
    for t in store.target_healths():
        failing[t.label] = failing.get(t.label, False) or t.failures > 0
    return metrics.StateReading(
        healthy=health.healthy,
        blind=health.blind,
        incidents_open=_count(i.rule for i in store.incidents() if i.is_open),
        outbox_pending=store.delivery_counts().get(DeliveryState.PENDING.value, 0),
        outbox_oldest_age=0.0 if oldest is None else now - oldest,
        feed_silence=silence,
        targets_failing=failing,
    )


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(collections.Counter(items))
