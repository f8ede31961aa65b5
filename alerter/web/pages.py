"""The HTML pages: the acknowledgement page, the incident board and a few plain answers.

Pure: values in, markup out; no I/O, no clock (`now` and the admins' `zone` are
arguments). Every value reaches the markup through `esc` (`html.escape`, quotes
included): templates are plain strings filled by `fmt`, which escapes each argument that
is not already `Html`. No inline script or style (the Content-Security-Policy allows only
the service's own files): the pages work without JavaScript; the board's map is the one
thing a script adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from alerter.durations import ago
from alerter.render import degrees, osm_link
from alerter.web.ack import AckResult, IncidentView, Position, TakeStatus, Told

#: Seconds between two refreshes of the board.
BOARD_REFRESH = 30
#: How many positions the acknowledgement page lists.
POSITIONS_SHOWN = 5

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"})


class Html(str):
    """Markup: already escaped, inserted as it is."""

    __slots__ = ()


def esc(value: object) -> Html:
    """`value` as text in markup (attributes included): escaped unless already `Html`."""
    if isinstance(value, Html):
        return value
    return Html(escape("" if value is None else str(value), quote=True))


def fmt(template: str, **values: object) -> Html:
    """`template` (`str.format` fields) with every value escaped."""
    return Html(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Html], sep: str = "") -> Html:
    """Markup pieces as one."""
    return Html(sep.join(esc(p) for p in parts))


# -- times and places ---------------------------------------------------------------------


def clock(t: float, zone: ZoneInfo) -> str:
    """`14:03 UTC (15:03 CET)`; the local date is added when it is not the UTC one."""
    utc = datetime.fromtimestamp(t, UTC)
    text = f"{utc:%H:%M} UTC"
    if zone.key in _UTC_NAMES:
        return text
    local = utc.astimezone(zone)
    day = f" {local.day} {_MONTHS[local.month - 1]}" if local.date() != utc.date() else ""
    return f"{text} ({local:%H:%M} {local.tzname()}{day})"


def when(t: float | None, now: float, zone: ZoneInfo) -> str:
    """`14:03 UTC (15:03 CET), 26 Nov 2026, 7 min ago`; `never` without a time."""
    if t is None:
        return "never"
    utc = datetime.fromtimestamp(t, UTC)
    return f"{clock(t, zone)}, {utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {ago(t, now)}"


def when_short(t: float | None, now: float, zone: ZoneInfo) -> str:
    """`14:03 UTC (15:03 CET), 7 min ago`, the date only when it is not today's (tables)."""
    if t is None:
        return "never"
    utc, today = datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(now, UTC)
    day = ""
    if utc.date() != today.date():
        day = f", {utc.day} {_MONTHS[utc.month - 1]}"
        day += f" {utc.year}" if utc.year != today.year else ""
    return f"{clock(t, zone)}{day}, {ago(t, now)}"


def unix(text: str | None) -> float | None:
    """The report's ISO 8601 times as POSIX seconds."""
    return None if text is None else datetime.fromisoformat(text).timestamp()


def place(lat: float | None, lon: float | None) -> Html:
    """`46.55000, 7.98000 (map)` with an OpenStreetMap link, or `no GPS fix`."""
    if lat is None or lon is None:
        return Html("no GPS fix")
    return fmt(
        '{lat}, {lon} <a href="{url}" rel="noopener noreferrer" target="_blank">map</a>',
        lat=degrees(lat),
        lon=degrees(lon),
        url=osm_link(lat, lon),
    )


def target_name(label: str) -> str:
    """A target's label as a page shows it: a URL without its query (Apprise's options)."""
    return label.split("?", 1)[0] if "://" in label else label


# -- the frame ------------------------------------------------------------------------------


def layout(
    title: str,
    body: Html,
    *,
    refresh: int | None = None,
    styles: Sequence[str] = (),
    scripts: Sequence[str] = (),
) -> Html:
    """A whole page: one column, readable on a phone, only the service's own files."""
    head = [
        Html('<meta charset="utf-8">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Html('<meta name="referrer" content="no-referrer">'),
        Html('<meta name="robots" content="noindex, nofollow">'),
        fmt("<title>{title}</title>", title=title),
    ]
    if refresh is not None:
        head.append(fmt('<meta http-equiv="refresh" content="{s}">', s=refresh))
    head += [fmt('<link rel="stylesheet" href="{href}">', href=s) for s in styles]
    head.append(Html('<link rel="stylesheet" href="/static/alerter.css">'))
    head += [fmt('<script src="{src}" defer></script>', src=s) for s in scripts]
    return fmt(
        '<!doctype html>\n<html lang="en">\n<head>\n{head}\n</head>\n'
        "<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        head=join(head, "\n"),
        body=body,
    )


def message_page(title: str, text: str) -> Html:
    """A plain page: a heading and a sentence (403, 429, ...)."""
    return layout(title, fmt("<h1>{title}</h1>\n<p>{text}</p>", title=title, text=text))


def too_many_page() -> Html:
    """429: the client asked too often."""
    return message_page("Too many requests", "Too many requests. Wait a minute, then try again.")


def refused_page() -> Html:
    """403: a POST that did not come from the page served for this link."""
    return message_page(
        "Not accepted",
        "This form was not accepted: it is too old, or it did not come from this page. "
        "Open the link from the alert again and submit the form from there.",
    )


# -- the acknowledgement page ---------------------------------------------------------------


def _headline(view: IncidentView) -> str:
    return f"{view.what}: {view.who}"


def _where(view: IncidentView, now: float, zone: ZoneInfo) -> Html:
    latest = view.positions[0] if view.positions else None
    fix = view.where
    parts: list[Html] = []
    if fix is None:
        parts.append(Html('<p class="where">No GPS fix.</p>'))
    else:
        assert fix.latitude is not None
        assert fix.longitude is not None
        parts.append(
            fmt(
                '<p class="where"><strong>{coords}</strong></p>\n'
                '<p><a class="button" href="{url}" rel="noopener noreferrer" '
                'target="_blank">Open in OpenStreetMap</a></p>\n<p>Position of {at}.</p>',
                coords=f"{degrees(fix.latitude)}, {degrees(fix.longitude)}",
                url=osm_link(fix.latitude, fix.longitude),
                at=when(fix.at, now, zone),
            )
        )
        if latest is not None and not latest.has_fix:
            parts.append(
                fmt(
                    "<p>The latest message ({at}) had no GPS fix: this is the last known "
                    "position.</p>",
                    at=when(latest.at, now, zone),
                )
            )
    return join(parts, "\n")


def _facts(view: IncidentView, now: float, zone: ZoneInfo) -> Html:
    rows = [
        ("Who", f"{view.who} ({view.feed})" if view.feed else view.who),
        ("What", view.what),
        ("Since", when(view.since, now, zone)),
    ]
    if view.text:
        rows.append(("Message", view.text))
    if view.battery:
        rows.append(("Battery", view.battery))
    return fmt(
        '<table class="facts">\n{rows}\n</table>',
        rows=join((fmt("<tr><th>{k}</th><td>{v}</td></tr>", k=k, v=v) for k, v in rows), "\n"),
    )


def _positions(positions: Sequence[Position], now: float, zone: ZoneInfo) -> Html:
    if not positions:
        return Html("<p>No message with a position yet.</p>")
    rows = (
        fmt(
            "<tr><td>{at}</td><td>{kind}</td><td>{where}</td></tr>",
            at=when_short(p.at, now, zone),
            kind=p.kind,
            where=place(p.latitude, p.longitude),
        )
        for p in positions[:POSITIONS_SHOWN]
    )
    return fmt(
        '<div class="wide"><table class="positions">\n'
        "<tr><th>When</th><th>Message</th><th>Where</th></tr>\n{rows}\n</table></div>",
        rows=join(rows, "\n"),
    )


def _told(told: Sequence[Told], now: float, zone: ZoneInfo) -> Html:
    if not told:
        return Html("<p>Nobody has been told yet.</p>")
    items = (
        fmt(
            "<li>{at}: {what} to {whom}{state}</li>",
            at=when_short(t.at, now, zone),
            what=t.what,
            whom=target_name(t.whom),
            state="" if t.delivered else " (not delivered yet)",
        )
        for t in told
    )
    return fmt('<ul class="told">\n{items}\n</ul>', items=join(items, "\n"))


def _taken(by: str, at: float | None, now: float, zone: ZoneInfo) -> Html:
    return fmt(
        '<p class="banner taken" id="taken">Taken by <strong>{by}</strong>{at}.</p>',
        by=by,
        at=f" at {when(at, now, zone)}" if at is not None else "",
    )


def _details(view: IncidentView, now: float, zone: ZoneInfo) -> Html:
    return fmt(
        "<h2>Details</h2>\n{facts}\n<h2>Last positions</h2>\n{positions}\n"
        "<h2>Who was told</h2>\n{told}",
        facts=_facts(view, now, zone),
        positions=_positions(view.positions, now, zone),
        told=_told(view.told, now, zone),
    )


def _place_section(view: IncidentView, now: float, zone: ZoneInfo) -> Html:
    return fmt("<h2>Where</h2>\n{where}", where=_where(view, now, zone))


def ack_page(
    view: IncidentView, proof: str, now: float, zone: ZoneInfo, *, problem: str | None = None
) -> Html:
    """The incident and, while nobody has taken it, the form that takes it."""
    parts = [
        fmt("<h1>{headline}</h1>", headline=_headline(view)),
        fmt(
            '<p class="lead">{who} sent {what}, {since}.</p>',
            who=view.who,
            what=view.what,
            since=ago(view.since, now),
        ),
    ]
    if view.taken_by:
        parts.append(_taken(view.taken_by, view.taken_at, now, zone))
    parts.append(_place_section(view, now, zone))
    if not view.taken_by:
        parts.append(
            fmt(
                '<form method="post" class="take">\n'
                "<h2>Take it</h2>\n{problem}"
                '<label for="name">Your name</label>\n'
                '<input id="name" name="name" type="text" required maxlength="60" '
                'autocomplete="name" autocapitalize="words">\n'
                '<input type="hidden" name="proof" value="{proof}">\n'
                '<button type="submit">I take it</button>\n'
                '<p class="note">Taking it stops the reminders and the escalation, and '
                "tells everyone who was alerted that you have it.</p>\n</form>",
                problem=fmt('<p class="banner">{p}</p>\n', p=problem) if problem else "",
                proof=proof,
            )
        )
    parts.append(_details(view, now, zone))
    return layout(_headline(view), join(parts, "\n"))


def ack_result_page(view: IncidentView, result: AckResult, now: float, zone: ZoneInfo) -> Html:
    """What a POST did: taken now, or already taken by someone (who, when)."""
    at = f" at {when(result.at, now, zone)}" if result.at is not None else ""
    if result.status is TakeStatus.TAKEN:
        title = f"Taken by {result.by}"
        banner = fmt(
            '<h1 id="taken">Taken by {by}</h1>\n<p class="banner taken">You took the {what} of '
            "{who}{at}. Everyone who was alerted is being told; reminders and escalation "
            "stop.</p>",
            by=result.by,
            what=view.what,
            who=view.who,
            at=at,
        )
    else:
        title = f"Already taken by {result.by}"
        banner = fmt(
            '<h1 id="taken">Already taken</h1>\n<p class="banner taken">Already taken by '
            "<strong>{by}</strong>{at}: {by} took the {what} of {who}.</p>",
            by=result.by or "someone",
            what=view.what,
            who=view.who,
            at=at,
        )
    body = [banner, _place_section(view, now, zone), _details(view, now, zone)]
    return layout(title, join(body, "\n"))


# -- the board ------------------------------------------------------------------------------


def login_page(*, wrong: bool = False) -> Html:
    """The board's token form (the token is then kept in a cookie)."""
    problem = Html('<p class="banner">That token is not the right one.</p>\n') if wrong else ""
    return layout(
        "spot-alerter status",
        fmt(
            "<h1>spot-alerter status</h1>\n{problem}"
            '<form method="post" action="/status" class="login">\n'
            '<label for="token">Status token</label>\n'
            '<input id="token" name="token" type="password" required autocomplete="off">\n'
            '<button type="submit">Open the board</button>\n</form>',
            problem=problem,
        ),
    )


def _t(iso_text: str | None, now: float, zone: ZoneInfo) -> str:
    return when_short(unix(iso_text), now, zone)


def _events(events: Sequence[Mapping[str, Any]], now: float, zone: ZoneInfo) -> Html:
    if not events:
        return Html("")
    rows = (
        fmt(
            "<tr><td>{at}</td><td>{reason}</td><td>{told}</td></tr>",
            at=_t(e["at"], now, zone),
            reason=e["reason"],
            told="notified"
            if e["notified"]
            else f"nobody told: {e['held_back'] or 'recorded only'}",
        )
        for e in events
    )
    return fmt(
        '<h4>History</h4>\n<div class="wide"><table>\n'
        "<tr><th>When</th><th>Decision</th><th>Told</th></tr>\n{rows}\n</table></div>",
        rows=join(rows, "\n"),
    )


def _delivery(d: Mapping[str, Any], now: float, zone: ZoneInfo) -> Html:
    if d["state"] == "sent":
        status = f"sent {_t(d['sent_at'], now, zone)}"
    elif d["state"] == "dropped":
        status = f"dropped: {d['error'] or 'the target left the configuration'}"
    elif d["attempts"]:
        status = f"failing ({d['attempts']} attempts): {d['error'] or 'no answer'}"
    else:
        status = "waiting"
    return fmt("<li>{label}: {status}</li>", label=target_name(d["label"]), status=status)


def _notifications(items: Sequence[Mapping[str, Any]], now: float, zone: ZoneInfo) -> Html:
    if not items:
        return Html("")
    rows = (
        fmt(
            "<tr><td>{at}</td><td>{title}</td><td><ul>{reached}</ul></td></tr>",
            at=_t(n["at"], now, zone),
            title=n["title"],
            reached=join(_delivery(d, now, zone) for d in n["deliveries"]),
        )
        for n in items
    )
    return fmt(
        '<h4>Notifications</h4>\n<div class="wide"><table>\n'
        "<tr><th>When</th><th>Alert</th><th>Who it reached</th></tr>\n{rows}\n</table></div>",
        rows=join(rows, "\n"),
    )


def _board_incident(i: Mapping[str, Any], now: float, zone: ZoneInfo) -> Html:
    facts = [f"since {_t(i['since'], now, zone)}"]
    if i.get("late"):
        facts.append("late")
    facts += [f"{i['reminders']} reminders", f"escalation step {i['escalation']}"]
    if i.get("resolved_at"):
        facts.append(f"resolved {_t(i['resolved_at'], now, zone)}")
    taken = ""
    if i.get("taken_by"):
        taken = fmt(
            '<p class="banner taken">Taken by <strong>{by}</strong>{at}.</p>\n',
            by=i["taken_by"],
            at=f" at {_t(i['taken_at'], now, zone)}" if i.get("taken_at") else "",
        )
    return fmt(
        '<section class="incident state-{state}" id="incident-{id}">\n'
        '<h3>#{id} {rule}: {who} <span class="state">{state}</span></h3>\n'
        "<p>{facts}</p>\n{taken}{events}\n{notifications}\n</section>",
        state=i["state"],
        id=i["id"],
        rule=i["rule"],
        who=i["device"]["name"],
        facts="; ".join(facts),
        taken=taken,
        events=_events(i.get("events", ()), now, zone),
        notifications=_notifications(i.get("notifications", ()), now, zone),
    )


def _devices(devices: Sequence[Mapping[str, Any]], now: float, zone: ZoneInfo) -> Html:
    rows = []
    for d in devices:
        m = d["last_message"]
        p = m["position"] if m else None
        lat, lon = (p["latitude"], p["longitude"]) if p else (None, None)
        data = (
            fmt(' data-lat="{lat}" data-lon="{lon}"', lat=lat, lon=lon)
            if lat is not None
            else Html("")
        )
        rows.append(
            fmt(
                '<tr class="device{open}"{data} data-name="{name}">'
                "<td>{name}</td><td>{feed}</td><td>{type}</td><td>{at}</td><td>{battery}</td>"
                "<td>{lat}</td><td>{lon}</td><td>{map}</td><td>{text}</td></tr>",
                open=" open" if d.get("open") else "",
                data=data,
                name=d["name"],
                feed=d["feed"],
                type=m["type"] if m else "none yet",
                at=_t(m["time"], now, zone) if m else "",
                battery=(m["battery"] or "") if m else "",
                lat=degrees(lat) if lat is not None else "no GPS fix",
                lon=degrees(lon) if lon is not None else "",
                map=place(lat, lon) if lat is not None else "",
                text=d.get("text") or "",
            )
        )
    if not rows:
        return Html("<p>No device has sent anything yet.</p>")
    return fmt(
        '<div class="wide"><table id="devices">\n<tr><th>Device</th><th>Feed</th>'
        "<th>Last message</th><th>When</th><th>Battery</th><th>Latitude</th>"
        "<th>Longitude</th><th>Map</th><th>Text</th></tr>\n{rows}\n</table></div>",
        rows=join(rows, "\n"),
    )


def _feeds(feeds: Sequence[Mapping[str, Any]], now: float, zone: ZoneInfo) -> Html:
    rows = (
        fmt(
            '<tr class="feed-{status}"><td>{name}</td><td>{status}</td><td>{poll}</td>'
            "<td>{good}</td><td>{stored}</td><td>{error}</td></tr>",
            name=f["name"],
            status=f["status"] + ("" if f["watched"] else " (not watched)"),
            poll=_t(f["last_poll"], now, zone),
            good=_t(f["last_good_answer"], now, zone),
            stored=f["messages_stored"],
            error=f"{f['last_error']} ({f['failures']}x)" if f["failures"] else "",
        )
        for f in feeds
    )
    return fmt(
        '<div class="wide"><table id="feeds">\n<tr><th>Feed</th><th>Status</th>'
        "<th>Last poll</th><th>Last good answer</th><th>Messages</th><th>Last error</th></tr>"
        "\n{rows}\n</table></div>",
        rows=join(rows, "\n"),
    )


def _targets(report: Mapping[str, Any], now: float, zone: ZoneInfo) -> Html:
    items = [
        fmt(
            "<li>{label}: {state}</li>",
            label=target_name(t["label"]),
            state=f"failing since {_t(t['failing_since'], now, zone)} ({t['failures']} attempts)"
            if t["failing"]
            else "fine",
        )
        for t in report["targets"]
    ]
    outbox = report["outbox"]
    waiting = fmt(
        "<p>Outbox: {pending} waiting, {sent} sent, {dropped} dropped{oldest}.</p>",
        pending=outbox.get("pending", 0),
        sent=outbox.get("sent", 0),
        dropped=outbox.get("dropped", 0),
        oldest=f"; oldest waiting since {_t(outbox['oldest_pending'], now, zone)}"
        if outbox.get("oldest_pending")
        else "",
    )
    listed = fmt("<ul>\n{items}\n</ul>", items=join(items, "\n")) if items else Html("")
    return join([listed, waiting], "\n")


def board_page(report: Mapping[str, Any], zone: ZoneInfo) -> Html:
    """The incident board: `alerter.web.board.gather`'s report as a page."""
    now = unix(report["generated_at"]) or 0.0
    health = report["health"]
    verdict = (
        Html('<span class="ok">healthy</span>')
        if health["status"] == "ok"
        else fmt(
            '<span class="bad">unhealthy</span>: {reasons}', reasons="; ".join(health["reasons"])
        )
    )
    needs = report.get("needs_admin") or []
    open_ = report["incidents"]
    recent = report.get("recent_incidents") or []
    parts = [
        Html("<h1>spot-alerter status</h1>"),
        fmt(
            '<p class="lead">{at}. The service is {verdict}. This page refreshes every '
            "{every} s.</p>",
            at=when(now, now, zone).rsplit(",", 1)[0],
            verdict=verdict,
            every=BOARD_REFRESH,
        ),
    ]
    if needs:
        parts.append(
            fmt(
                '<div class="banner"><strong>Needs an admin</strong><ul>{items}</ul></div>',
                items=join(fmt("<li>{x}</li>", x=x) for x in needs),
            )
        )
    parts.append(fmt("<h2>Open incidents ({n})</h2>", n=len(open_)))
    parts.append(
        join((_board_incident(i, now, zone) for i in open_), "\n")
        if open_
        else Html("<p>None.</p>")
    )
    if recent:
        parts.append(Html("<h2>Recently resolved</h2>"))
        parts.append(join((_board_incident(i, now, zone) for i in recent), "\n"))
    parts += [
        Html("<h2>Devices</h2>"),
        Html(
            '<div id="map" class="map" hidden></div>\n'
            '<p class="note">The map loads OpenStreetMap tiles when this browser is online; '
            "the table below always has the coordinates.</p>"
        ),
        _devices(report["devices"], now, zone),
        Html("<h2>Feeds</h2>"),
        _feeds(report["feeds"], now, zone),
        Html("<h2>Targets</h2>"),
        _targets(report, now, zone),
    ]
    return layout(
        "spot-alerter status",
        join(parts, "\n"),
        refresh=BOARD_REFRESH,
        styles=["/static/leaflet/leaflet.css"],
        scripts=["/static/leaflet/leaflet.js", "/static/board.js"],
    )
