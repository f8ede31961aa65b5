"""Decision -> text: a title, the long form (email, Telegram, Slack) and the SMS form.

Pure: no I/O and no clock; `now` and the admins' `zone` are arguments. Titles start
with one word of a fixed vocabulary (PRODUCT.md "Alert content") so people and mail
filters can tell kinds apart:

    OPENED        {subject}[ (late)]: DEVICE (FEED)          HELP: Alice (Club)
    UPDATED       {subject} update[ (late)]: DEVICE (FEED)   HELP update: Alice (Club)
    REMINDED      Reminder {n}: {subject} DEVICE (FEED)      Reminder 2: HELP Alice (Club)
    ESCALATED     Escalated: {subject} DEVICE (FEED)
    RESOLVED      HELP cancelled[ (late)]: DEVICE (FEED)     (subject HELP)
                  Back in contact[ (late)]: DEVICE (FEED)    (subject Silent)
                  {subject} resolved[ (late)]: DEVICE (FEED) (any other subject)
    ACKNOWLEDGED  Acknowledged: NAME took the {subject} of DEVICE at TIME
                                       Acknowledged: Bob took the HELP of Alice at 14:10 UTC
                  (without a name: Acknowledged: {subject} DEVICE (FEED))
    admin         {kind}: {subject}                          Feed blocked: Club

The SMS form starts with the title (names trimmed, GSM-7-safe) and fits one segment
in ordinary cases, two at most. An open incident's acknowledgement link (`ack_url`) is
worth a second segment: without it an SMS-only contact cannot take the incident; it is
left out only when even two segments cannot hold it whole.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alerter.durations import ago, format_duration
from alerter.models import (
    UNUSABLE_TIME,
    AdminKind,
    AdminNotice,
    Decision,
    IncidentState,
    Reason,
    Received,
    Rendered,
    Severity,
    Subject,
    newest_fix,
)
from alerter.rhythm import usual_gap

#: Characters of one SMS segment, and of two (concatenated segments carry a header).
SMS_ONE = 160
SMS_TWO = 306

# ASCII that is also in the GSM 03.38 basic table: anything else makes the gateway
# switch to UCS-2 (70 characters a segment) or costs two septets (the extension table).
_SMS_SAFE = frozenset(map(chr, range(0x20, 0x7F))) - frozenset("`^{}\\[]~|")
# Letters and signs NFKD does not reduce to ASCII.
_TRANSLIT = str.maketrans(
    {
        "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
        "\u0131": "i",  # dotless i
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "`": "'",  # single quotes
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "«": '"', "»": '"',  # double quotes
        "\u2013": "-", "\u2014": "-", "~": "-",  # dashes
        "[": "(", "]": ")", "{": "(", "}": ")", "|": "/", "\\": "/", "€": "EUR",
    }
)  # fmt: skip
# Longest names the SMS form keeps, so that the title part leaves room for where and when.
_SMS_DEVICE = 40
_SMS_FEED = 30
_SMS_SUBJECT = 24
_SMS_NAME = 30  # who acknowledged
# A message text trimmed to fewer characters than this says nothing useful.
_SMS_TEXT_MIN = 12

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UTC_NAMES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"}
)

_RECOVERIES = frozenset(
    {AdminKind.FEED_RECOVERED, AdminKind.DELIVERY_RECOVERED, AdminKind.STATE_RECOVERED}
)


def render(decision: Decision, now: float, zone: ZoneInfo, ack_url: str | None = None) -> Rendered:
    """Title, long body and SMS form of one decision; `ack_url` is shown only while the
    incident is open."""
    d = decision
    took = _took(d, d.incident.acknowledged_by, d.subject, d.device.name,
                 _clock(_taken_at(d, now), zone))  # fmt: skip
    kind, rest = _heading(d, d.subject, _who(d.device.name, d.feed_name), took)
    ack = ack_url if ack_url and decision.incident.state is IncidentState.OPEN else None
    return Rendered(
        title=f"{kind}: {rest}",
        body="\n".join(_body(decision, now, zone, ack)),
        short=_short(decision, now, ack),
        severity=decision.severity,
    )


def render_plain(decision: Decision, error: str) -> Rendered:
    """A decision's text from its plainest facts, when `render` failed on its details: an
    alert that says less is better than none."""
    d = decision
    m = d.message.message if d.message else None
    title = f"{d.subject}: {d.device.name} ({d.feed_name})"
    lines = [
        f"{d.reason.value.capitalize()}: {d.subject} for {d.device.name} ({d.device.id}).",
        f"Feed: {d.feed_name}",
    ]
    if m is not None:
        lines.append(f"Message: {m.type}, id {m.id}")
        if m.latitude is not None and m.longitude is not None:
            lines.append(f"Position: {m.latitude}, {m.longitude}")
    lines.append(f"(Some details could not be shown: {error}.)")
    short = _trim(_sms(" ".join([title, *lines[2:-1]])), SMS_ONE)
    return Rendered(title=title, body="\n".join(lines), short=short, severity=d.severity)


def render_admin(notice: AdminNotice, now: float, zone: ZoneInfo) -> Rendered:
    """Title, long body and SMS form of a notice about the service itself."""
    severity, headline, action, note = _ADMIN[notice.kind]
    title = f"{notice.kind}: {notice.subject}"
    title_short = f"{notice.kind}: {_trim(notice.subject, _SMS_DEVICE)}"
    lines = [headline.format(subject=notice.subject), *_admin_times(notice, now, zone)]
    if notice.detail:
        lines.append(f"Detail: {notice.detail}")
    lines += [f"What the service does: {action}", f"Severity: {severity}"]
    short = _fit_sms(
        [_sms(f"{title_short} {_admin_short_time(notice, now)}".rstrip() + ".")],
        [_sms(note)],
        _sms(notice.detail),
    )
    return Rendered(title=title, body="\n".join(lines), short=short, severity=severity)


def render_test(now: float, zone: ZoneInfo) -> Rendered:
    """A test alert that nobody can mistake for an emergency."""
    notice = AdminNotice(kind=AdminKind.TEST, subject="spot-alerter test alert", detail="", at=now)
    return render_admin(notice, now, zone)


# -- titles ---------------------------------------------------------------------------


def _heading(decision: Decision, subject: str, who: str, took: str = "") -> tuple[str, str]:
    """(kind with its late marker, the rest): the title is `kind: rest`."""
    late = " (late)" if decision.late else ""
    match decision.reason:
        case Reason.OPENED:
            return f"{subject}{late}", who
        case Reason.UPDATED:
            return f"{subject} update{late}", who
        case Reason.RESOLVED:
            return f"{_resolved_kind(decision.kind, subject)}{late}", who
        case Reason.REMINDED:
            return f"Reminder {decision.incident.reminders}{late}", f"{subject} {who}"
        case Reason.ESCALATED:
            return f"Escalated{late}", f"{subject} {who}"
        case Reason.ACKNOWLEDGED:
            return f"Acknowledged{late}", took or f"{subject} {who}"


def _took(d: Decision, by: str | None, subject: str, device: str, when: str) -> str:
    """`Bob took the HELP of Alice at 14:10 UTC`: an acknowledgement's title words; empty
    for any other decision, and when nobody's name is known."""
    if d.reason is not Reason.ACKNOWLEDGED or not by:
        return ""
    return f"{by} took the {subject} of {device} at {when}"


def _taken_at(d: Decision, now: float) -> float:
    return d.incident.acknowledged_at if d.incident.acknowledged_at is not None else now


def _resolved_kind(kind: Subject, shown: str) -> str:
    match kind:
        case Subject.HELP:
            return "HELP cancelled"
        case Subject.SILENT:
            return "Back in contact"
    return f"{shown} resolved"


def _who(device: str, feed: str) -> str:
    return f"{device} ({feed})" if feed else device


# -- the long form --------------------------------------------------------------------


def _body(decision: Decision, now: float, zone: ZoneInfo, ack: str | None) -> list[str]:
    d, msg = decision, decision.message
    lines = [_headline(d, now, zone), *_circumstance(d, now, zone)]
    lines += [f"Device: {d.device.name} ({d.device.id})", f"Feed: {d.feed_name}"]
    lines.append(f"{_time_label(d)}: {_when(_message_time(d), now, zone)}")
    unusable = _unusable_time(msg)
    if unusable is not None:
        lines.append(
            f"The device's time was unusable (it sent {unusable}); "
            "the time shown is when the service received the message."
        )
    lines += _position_lines(d, now, zone)
    lines.append(f"Battery: {_battery(msg)}")
    if msg is not None and msg.message.content:
        lines.append(f"Message: {msg.message.content}")
    if d.kind is Subject.HELP:
        since = "HELP sent" if d.reason is Reason.RESOLVED else "HELP since"
        lines += [f"{since}: {_when(_started(d), now, zone)}", f"Updates: {d.incident.updates}"]
    lines.append(f"Still open: {', '.join(d.open_elsewhere)}" if d.open_elsewhere
                 else "Nothing else open")  # fmt: skip
    if ack:
        lines.append(f"Acknowledge: {ack}")
    lines.append(f"Severity: {d.severity}")
    return lines


def _headline(d: Decision, now: float, zone: ZoneInfo) -> str:
    """The first line: a plain sentence of what happened."""
    situation = _situation(d, now, zone)
    match d.reason:
        case Reason.OPENED:
            return f"{situation}."
        case Reason.UPDATED:
            return f"{situation} again (update {d.incident.updates}); the latest position is below."
        case Reason.REMINDED:
            return f"Reminder {d.incident.reminders}: {situation}, and nobody has acknowledged yet."
        case Reason.ESCALATED:
            waited = format_duration(now - d.incident.opened_at)
            return (
                f"Escalated: {situation}, and nobody acknowledged for {waited}; "
                "you are now alerted too."
            )
        case Reason.ACKNOWLEDGED:
            by = d.incident.acknowledged_by
            when = _clock(_taken_at(d, now), zone)
            who = f"{by} took charge at {when}" if by else "someone has taken charge"
            return f"Acknowledged: {who}, so reminders and escalation stop. {situation}."
        case Reason.RESOLVED:
            return _resolution(d, now)


def _situation(d: Decision, now: float, zone: ZoneInfo) -> str:
    """What the incident is about, as a clause: `Alice pressed HELP`."""
    name = d.device.name
    opening = d.first_message or d.message
    message_type = opening.message.type if opening is not None else "?"
    match d.kind:
        case Subject.HELP:
            return f"{name} pressed HELP"
        case Subject.SILENT:
            started = d.incident.started_at
            gap = usual_gap(d.device.recent_times)
            usual = f"; its usual gap between messages is {format_duration(gap)}" if gap else ""
            return (
                f"{name} has been silent since {_clock(started, zone)}, {ago(started, now)}{usual}"
            )
        case Subject.LOW_BATTERY:
            return f"{name} reports a low battery"
        case Subject.UNKNOWN:
            return f"{name} sent a message of unknown type {message_type}"
        case Subject.EVENT:
            return f"{name} sent a message of type {message_type}"


def _resolution(d: Decision, now: float) -> str:
    name = d.device.name
    match d.kind:
        case Subject.HELP:
            return f"HELP cancelled: {name} cancelled the HELP."
        case Subject.SILENT:
            silence = format_duration(_message_time(d) - d.incident.started_at)
            return f"Back in contact: {name} was heard again after a silence of {silence}."
        case Subject.LOW_BATTERY:
            return f"Low battery resolved: {name} reports a good battery again."
    return f"{d.subject} resolved: the incident for {name} is closed."


def _circumstance(d: Decision, now: float, zone: ZoneInfo) -> list[str]:
    """The line that explains a late or first-heard-of-at-its-end alert, if any."""
    t = _message_time(d)
    if d.first_notice:
        opened, closed = _opened_closed(d.kind, d.subject)
        # Late: both were sent long before the service saw them. Not late: they were
        # sent within one poll of each other, and the service saw them together.
        arrival = "only now" if d.late else "in the same poll"
        return [
            f"{opened} at {_clock(_started(d), zone)} and {closed} at {_clock(t, zone)}; "
            f"both reached the service {arrival}."
        ]
    if d.late:
        return [f"Late: sent {_clock(t, zone)}, {ago(t, now)}; the service only saw it now."]
    return []


def _opened_closed(kind: Subject, shown: str) -> tuple[str, str]:
    """How a first-notice resolution names its two moments."""
    return ("HELP sent", "cancelled") if kind is Subject.HELP else (f"{shown} began", "resolved")


def _time_label(d: Decision) -> str:
    if d.kind is Subject.SILENT and d.reason is not Reason.RESOLVED:
        return "Last heard"
    if d.reason in (Reason.REMINDED, Reason.ESCALATED, Reason.ACKNOWLEDGED):
        return "Latest message"
    return "Sent"


def _position_lines(d: Decision, now: float, zone: ZoneInfo) -> list[str]:
    fix = _fix(d.message)
    if fix is not None:
        return [f"Position: {_coords(*fix)}", f"Map: {osm_link(*fix)}"]
    lines = ["Position: no GPS fix"]
    last = _last_fix(d)
    if last is not None:
        received, (lat, lon) = last
        when = _when(received.message.unix_time, now, zone)
        lines += [
            f"Last known position: {_coords(lat, lon)} at {when}",
            f"Map: {osm_link(lat, lon)}",
        ]
    return lines


# -- the SMS form ---------------------------------------------------------------------


def _short(d: Decision, now: float, ack: str | None) -> str:
    device = _sms(d.device.name, _SMS_DEVICE) or _sms(d.device.id, _SMS_DEVICE) or "device"
    subject = _sms(d.subject, _SMS_SUBJECT)
    by = d.incident.acknowledged_by
    took = _took(d, by and (_sms(by, _SMS_NAME) or "Someone"), subject, device,
                 _hhmmz(_taken_at(d, now)))  # fmt: skip
    kind, rest = _heading(d, subject, _who(device, _sms(d.feed_name, _SMS_FEED)), took)
    where, link = _short_position(d)
    context, when = _short_timing(d, now)
    vital = [f"{kind}: {rest}", context, where, when, link, _short_battery(d.message)]
    wanted = ack if ack and set(ack) <= _SMS_SAFE else ""
    text = _sms(d.message.message.content) if d.message and d.message.message.content else ""
    return _fit_sms(vital, [], text, wanted=wanted)


def _short_timing(d: Decision, now: float) -> tuple[str, str]:
    """(what-and-since words after the title, the message time); either may be empty."""
    t = _message_time(d)
    when = f"{_hhmmz(t)} {_compact(now - t)} ago"
    if d.first_notice:
        opened, closed = _opened_closed(d.kind, _sms(d.subject, _SMS_SUBJECT))
        return f"{opened} {_hhmmz(_started(d))}, {closed} {when}", ""
    if d.kind is Subject.SILENT:
        started = d.incident.started_at
        if d.reason is Reason.RESOLVED:
            return f"after {_compact(t - started)} silence", when
        gap = usual_gap(d.device.recent_times)
        usual = f", usual {_compact(gap)}" if gap else ""
        return f"silent since {_hhmmz(started)} ({_compact(now - started)}{usual})", ""
    if d.reason is Reason.ESCALATED:
        return f"no ack for {_compact(now - d.incident.opened_at)}", when
    return "", when


def _short_position(d: Decision) -> tuple[str, str]:
    """(where, map link); the link is empty without any fix."""
    fix = _fix(d.message)
    if fix is not None:
        return _coords(*fix, sep=","), _osm_short(*fix)
    last = _last_fix(d)
    if last is None:
        return "no GPS fix", ""
    received, (lat, lon) = last
    where = f"no GPS fix, last {_coords(lat, lon, sep=',')} ({_hhmmz(received.message.unix_time)})"
    return where, _osm_short(lat, lon)


def _short_battery(msg: Received | None) -> str:
    return f"bat {_sms(msg.message.battery)}" if msg and msg.message.battery else ""


def _fit_sms(vital: Iterable[str], optional: Iterable[str], text: str, wanted: str = "") -> str:
    """Join the parts: one segment if the vital ones fit in it, else two at most. `wanted`
    (a link) may take it to a second segment; it is left out only when it would not fit
    whole in two."""
    out = " ".join(p for p in vital if p)
    if wanted and len(out) + 1 + len(wanted) <= SMS_TWO:
        out += f" {wanted}"
    limit = SMS_ONE if len(out) <= SMS_ONE else SMS_TWO
    for part in optional:
        if part and len(out) + 1 + len(part) <= limit:
            out += f" {part}"
    room = limit - len(out) - 1
    if text and room >= _SMS_TEXT_MIN:
        out += f" {_trim(text, room)}"
    return _trim(out, SMS_TWO)  # a guard: the name limits keep the vital parts shorter


def _sms(text: str | None, width: int | None = None) -> str:
    """GSM-7-safe ASCII on one line: accents dropped (Zoë -> Zoe), the rest removed."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    kept = "".join(c if c in _SMS_SAFE else " " if c.isspace() else "" for c in decomposed)
    flat = " ".join(kept.split())
    return _trim(flat, width) if width else flat


def _trim(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


# -- admin notices --------------------------------------------------------------------

# kind -> (severity, first line, what the service does, the SMS note)
_ADMIN: dict[AdminKind, tuple[Severity, str, str, str]] = {
    AdminKind.FEED_FAILING: (
        Severity.CRITICAL,
        "Feed failing: the service cannot read feed {subject}; "
        "a HELP from its devices is not seen until it recovers.",
        "It retries at every poll interval, within SPOT's limits; the other feeds continue. "
        "You will hear when the feed recovers; messages missed meanwhile are alerted then, "
        "marked late.",
        "HELPs on this feed go unseen until it recovers.",
    ),
    AdminKind.FEED_BLOCKED: (
        Severity.CRITICAL,
        "Feed blocked: SPOT refuses to serve feed {subject}; "
        "a HELP from its devices is not seen while it is blocked.",
        "SPOT answered 403: the IP or feed is blocked for polling too fast. This feed now "
        "waits hours between tries; the other feeds continue. Only an email to SPOT support "
        "restores a blocked feed.",
        "SPOT 403: waits hours between tries. Email SPOT support.",
    ),
    AdminKind.FEED_RECOVERED: (
        Severity.INFO,
        "Feed recovered: feed {subject} answers again.",
        "It reads the feed at its usual pace again and catches up on the messages it missed; "
        "a HELP among them is alerted, marked late.",
        "Missed messages are being caught up.",
    ),
    AdminKind.DELIVERY_FAILING: (
        Severity.WARNING,
        "Delivery failing: alerts to {subject} are not getting through.",
        "It retries this target alone, with backoff, for as long as its incidents matter; "
        "the other targets are not affected. Check the target's address, credentials and "
        "quota.",
        "Retrying this target; check its address and credentials.",
    ),
    AdminKind.DELIVERY_RECOVERED: (
        Severity.INFO,
        "Delivery recovered: alerts to {subject} get through again.",
        "It delivers the alerts held back for this target.",
        "Held alerts are being delivered.",
    ),
    AdminKind.RULES_REJECTED: (
        Severity.WARNING,
        "Rules rejected: the rule files or the Apprise config have errors ({subject}) and "
        "were not loaded.",
        "The previous rules and targets stay in force until the files are fixed; "
        "`alerter check` lists each problem with its file and line.",
        "Previous rules stay in force; run alerter check.",
    ),
    AdminKind.MESSAGE_SET_ASIDE: (
        Severity.WARNING,
        "Message set aside: a message from {subject} could not be decided and was set aside.",
        "Every other message goes on as usual; this one is kept in the archive with the "
        "reason, and nobody was alerted for it. Check the detail and the device.",
        "Others go on; check this device.",
    ),
    AdminKind.STATE_UNWRITABLE: (
        Severity.CRITICAL,
        "State unwritable: the service cannot write its state ({subject}); "
        "it is blind: new messages cannot be stored or alerted.",
        "It keeps trying; polling and alerting resume by themselves once the disk can be "
        "written again (free space, or fix the permissions or the read-only mount).",
        "Service blind: free the disk or fix its permissions.",
    ),
    AdminKind.STATE_RECOVERED: (
        Severity.INFO,
        "State recovered: the service can write its state ({subject}) again.",
        "It stores and alerts again; messages that arrived meanwhile are read from SPOT "
        "(it keeps 7 days) and alerted, marked late.",
        "Catching up on missed messages.",
    ),
    AdminKind.TEST: (
        Severity.INFO,
        "This is a test alert from spot-alerter: nobody is in trouble and no action is needed.",
        "Nothing: this alert only shows that this target receives alerts.",
        "This is a test. Nobody is in trouble; no action needed.",
    ),
}


def _admin_times(notice: AdminNotice, now: float, zone: ZoneInfo) -> list[str]:
    if notice.kind is AdminKind.TEST:
        return [f"Sent: {_when(notice.at, now, zone)}"]
    if notice.kind not in _RECOVERIES:
        return [f"Since: {_when(notice.since or notice.at, now, zone)}"]
    lines = [f"Recovered: {_when(notice.at, now, zone)}"]
    if notice.since is not None:
        lines += [
            f"Failing since: {_when(notice.since, now, zone)}",
            f"Outage: {format_duration(notice.at - notice.since)}",
        ]
    return lines


def _admin_short_time(notice: AdminNotice, now: float) -> str:
    if notice.kind is AdminKind.TEST:
        return f"at {_hhmmz(notice.at)}"
    if notice.kind in _RECOVERIES:
        return f"after {_compact(notice.at - notice.since)} down" if notice.since else ""
    since = notice.since or notice.at
    return f"since {_hhmmz(since)} ({_compact(now - since)})"


# -- shared pieces: times, positions, message facts ----------------------------------


def _when(t: float, now: float, zone: ZoneInfo) -> str:
    """`14:03 UTC (15:03 CET), 26 Nov 2026 — 7 min ago`."""
    utc = datetime.fromtimestamp(t, UTC)
    return f"{_clock(t, zone)}, {utc.day} {_MONTHS[utc.month - 1]} {utc.year} — {ago(t, now)}"


def _clock(t: float, zone: ZoneInfo) -> str:
    """`14:03 UTC (15:03 CET)`; the local date is added when it is not the UTC one."""
    utc = datetime.fromtimestamp(t, UTC)
    text = f"{utc:%H:%M} UTC"
    if zone.key in _UTC_NAMES:
        return text
    local = utc.astimezone(zone)
    day = f" {local.day} {_MONTHS[local.month - 1]}" if local.date() != utc.date() else ""
    return f"{text} ({local:%H:%M} {local.tzname()}{day})"


def _hhmmz(t: float) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%H:%M}Z"


def _compact(seconds: float) -> str:
    """format_duration without spaces, for SMS: `3h05m`, `7m`, `2d4h`."""
    return format_duration(seconds).replace(" min", "m").replace(" ", "")


def _coords(lat: float, lon: float, sep: str = ", ") -> str:
    return f"{degrees(lat)}{sep}{degrees(lon)}"


def degrees(value: float) -> str:
    """Five decimals (about a metre), never `-0.00000`."""
    text = f"{value:.5f}"
    return "0.00000" if text == "-0.00000" else text


def osm_link(lat: float, lon: float) -> str:
    """An OpenStreetMap link with a marker at the position."""
    la, lo = degrees(lat), degrees(lon)
    return f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map=14/{la}/{lo}"


def _osm_short(lat: float, lon: float) -> str:
    return f"https://osm.org/?mlat={degrees(lat)}&mlon={degrees(lon)}"


def _fix(received: Received | None) -> tuple[float, float] | None:
    if received is None:
        return None
    lat, lon = received.message.latitude, received.message.longitude
    return (lat, lon) if lat is not None and lon is not None else None


def _last_fix(d: Decision) -> tuple[Received, tuple[float, float]] | None:
    """The newest fix among the incident's messages and the device's latest message."""
    newest = newest_fix((d.last_fix, d.first_message, d.device.last))
    fix = _fix(newest)
    return (newest, fix) if newest is not None and fix is not None else None


def _message_time(d: Decision) -> float:
    return float(d.message.message.unix_time) if d.message else d.incident.updated_at


def _started(d: Decision) -> float:
    """When the incident began: its first message's time, else the engine's start."""
    return float(d.first_message.message.unix_time) if d.first_message else d.incident.started_at


def _unusable_time(msg: Received | None) -> str | None:
    """The time a device sent when it was unusable (the parser kept it in `extra`)."""
    if msg is None:
        return None
    return dict(msg.message.extra).get(UNUSABLE_TIME)


def _battery(msg: Received | None) -> str:
    return msg.message.battery if msg and msg.message.battery else "unknown"
