"""render: decision -> title, long body and SMS form."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerter.models import (
    AdminKind,
    AdminNotice,
    Decision,
    Device,
    Incident,
    IncidentState,
    Message,
    Reason,
    Received,
    Severity,
    Subject,
)
from alerter.render import SMS_ONE, SMS_TWO, render, render_admin, render_test

ZURICH = ZoneInfo("Europe/Zurich")
UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 26, 14, 3, tzinfo=UTC).timestamp()  # 15:03 CET
NOW = T0 + 7 * 60
ACK = "https://alerter.example.org/ack/Zx9-Qm_4kP2vT7aL"
# Characters of the GSM 03.38 basic table that are also ASCII: what an SMS may carry.
GSM_SAFE = set(map(chr, range(0x20, 0x7F))) - set("`^{}\\[]~|")


def at(hh: int, mm: int, day: int = 26, month: int = 11) -> float:
    return datetime(2026, month, day, hh, mm, tzinfo=UTC).timestamp()


def received(
    type_: str = "HELP",
    t: float = T0,
    lat: float | None = 46.12345,
    lon: float | None = 7.12345,
    battery: str | None = "LOW",
    content: str | None = None,
    id_: int = 1,
) -> Received:
    msg = Message(
        id=id_, messenger_id="0-3537610", messenger_name="Alice", unix_time=int(t),
        type=type_, latitude=lat, longitude=lon, battery=battery, content=content,
    )  # fmt: skip
    return Received(message=msg, feed_id="feed1", received_at=t + 30)


def incident(**kw: Any) -> Incident:
    base = Incident(
        device_id="0-3537610", rule="help", state=IncidentState.OPEN,
        started_at=T0, opened_at=T0 + 30, updated_at=T0,
    )  # fmt: skip
    return replace(base, **kw)


def kind_of(subject: str) -> Subject:
    """The kind a rule with this title word has (`CUSTOM message`: another listed type)."""
    return next((k for k in Subject if k.value == subject), Subject.EVENT)


def decision(reason: Reason = Reason.OPENED, subject: str = "HELP", **kw: Any) -> Decision:
    """A HELP from Alice (Club) at 14:03 UTC, seen 7 min ago; override any field."""
    msg = received()
    state = IncidentState.RESOLVED if reason is Reason.RESOLVED else IncidentState.OPEN
    if reason is Reason.ACKNOWLEDGED:
        state = IncidentState.ACKNOWLEDGED
    base = Decision(
        reason=reason, incident=incident(state=state), rule="help", subject=subject,
        kind=kind_of(subject), severity=Severity.CRITICAL,
        device=Device("0-3537610", "Alice", "feed1", last=msg),
        feed_name="Club", message=msg, tags=("rescue",), first_message=msg,
    )  # fmt: skip
    return replace(base, **kw)


def with_content(d: Decision, content: str) -> Decision:
    assert d.message is not None
    return replace(
        d, message=replace(d.message, message=replace(d.message.message, content=content))
    )


def body_lines(d: Decision, now: float = NOW, zone: ZoneInfo = ZURICH, **kw: Any) -> list[str]:
    return render(d, now, zone, **kw).body.splitlines()


# -- titles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "title"),
    [
        pytest.param(decision(), "HELP: Alice (Club)", id="help"),
        pytest.param(decision(late=True), "HELP (late): Alice (Club)", id="help-late"),
        pytest.param(decision(subject="Silent"), "Silent: Alice (Club)", id="silent"),
        pytest.param(decision(subject="Low battery"), "Low battery: Alice (Club)", id="battery"),
        pytest.param(
            decision(subject="Unknown message", message=received("SOS"), first_message=None),
            "Unknown message: Alice (Club)",
            id="unknown",
        ),
        pytest.param(
            decision(subject="CUSTOM message"), "CUSTOM message: Alice (Club)", id="custom"
        ),
        pytest.param(decision(Reason.UPDATED), "HELP update: Alice (Club)", id="update"),
        pytest.param(
            decision(Reason.REMINDED, incident=incident(reminders=3)),
            "Reminder 3: HELP Alice (Club)",
            id="reminder-3",
        ),
        pytest.param(
            decision(Reason.REMINDED, "Silent", incident=incident(reminders=1)),
            "Reminder 1: Silent Alice (Club)",
            id="reminder-silent",
        ),
        pytest.param(decision(Reason.ESCALATED), "Escalated: HELP Alice (Club)", id="escalated"),
        pytest.param(decision(Reason.RESOLVED), "HELP cancelled: Alice (Club)", id="cancelled"),
        pytest.param(
            decision(Reason.RESOLVED, late=True, first_notice=True),
            "HELP cancelled (late): Alice (Club)",
            id="cancelled-late-first-notice",
        ),
        pytest.param(
            decision(Reason.RESOLVED, "Silent"), "Back in contact: Alice (Club)", id="back"
        ),
        pytest.param(
            decision(Reason.RESOLVED, "Low battery"),
            "Low battery resolved: Alice (Club)",
            id="battery-resolved",
        ),
        pytest.param(
            decision(Reason.RESOLVED, "Unknown message"),
            "Unknown message resolved: Alice (Club)",
            id="unknown-resolved",
        ),
        pytest.param(
            decision(Reason.ACKNOWLEDGED), "Acknowledged: HELP Alice (Club)", id="acknowledged"
        ),
    ],
)
def test_title(d: Decision, title: str) -> None:
    assert render(d, NOW, ZURICH).title == title


@pytest.mark.parametrize(
    ("subject", "first_words"),
    [
        ("HELP", "HELP cancelled:"),
        ("Silent", "Back in contact:"),
        ("Low battery", "Low battery resolved:"),
        ("Unknown message", "Unknown message resolved:"),
    ],
)
def test_resolutions_say_so_in_their_first_words(subject: str, first_words: str) -> None:
    rendered = render(decision(Reason.RESOLVED, subject), NOW, ZURICH)
    assert rendered.title.startswith(first_words)
    assert rendered.body.startswith(first_words)
    assert rendered.short.startswith(first_words)


# -- the first line: what happened ----------------------------------------------------


@pytest.mark.parametrize(
    ("d", "first_line"),
    [
        pytest.param(decision(), "Alice pressed HELP.", id="help"),
        pytest.param(
            decision(Reason.UPDATED, incident=incident(updates=2)),
            "Alice pressed HELP again (update 2); the latest position is below.",
            id="update",
        ),
        pytest.param(
            decision(Reason.REMINDED, incident=incident(reminders=3)),
            "Reminder 3: Alice pressed HELP, and nobody has acknowledged yet.",
            id="reminder",
        ),
        pytest.param(
            decision(Reason.ESCALATED, incident=incident(opened_at=NOW - 20 * 60)),
            "Escalated: Alice pressed HELP, and nobody acknowledged for 20 min; "
            "you are now alerted too.",
            id="escalated",
        ),
        pytest.param(
            decision(
                subject="Silent",
                incident=incident(started_at=at(13, 0)),
                device=Device("0-3537610", "Alice", "feed1", recent_times=(600, 1200, 1800)),
            ),
            "Alice has been silent since 13:00 UTC (14:00 CET), 1 h 10 min ago; "
            "its usual gap between messages is 10 min.",
            id="silent-with-usual-gap",
        ),
        pytest.param(
            decision(subject="Silent", incident=incident(started_at=at(13, 0))),
            "Alice has been silent since 13:00 UTC (14:00 CET), 1 h 10 min ago.",
            id="silent-gap-unknown",
        ),
        pytest.param(
            decision(
                Reason.RESOLVED,
                "Silent",
                incident=incident(state=IncidentState.RESOLVED, started_at=T0 - 65 * 60),
            ),
            "Back in contact: Alice was heard again after a silence of 1 h 05 min.",
            id="back-in-contact",
        ),
        pytest.param(
            decision(subject="Unknown message", message=received("SOS"), first_message=None),
            "Alice sent a message of unknown type SOS.",
            id="unknown-type-named",
        ),
    ],
)
def test_first_line_says_what_happened(d: Decision, first_line: str) -> None:
    assert body_lines(d)[0] == first_line


def test_acknowledged_says_reminders_stop() -> None:
    first = body_lines(decision(Reason.ACKNOWLEDGED))[0]
    assert first.startswith("Acknowledged: someone has taken charge")
    assert "reminders and escalation stop" in first


# -- who, when, where -----------------------------------------------------------------


def test_body_names_device_id_feed_and_severity() -> None:
    rendered = render(decision(), NOW, ZURICH)
    lines = rendered.body.splitlines()
    assert "Device: Alice (0-3537610)" in lines
    assert "Feed: Club" in lines
    assert "Severity: critical" in lines
    assert rendered.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    ("t", "now", "zone", "line"),
    [
        pytest.param(T0, NOW, ZURICH, "Sent: 14:03 UTC (15:03 CET), 26 Nov 2026 — 7 min ago",
                     id="winter-zurich"),
        pytest.param(at(14, 3, 1, 7), at(16, 8, 1, 7), ZURICH,
                     "Sent: 14:03 UTC (16:03 CEST), 1 Jul 2026 — 2 h 05 min",
                     id="summer-zurich"),
        pytest.param(T0, NOW, UTC_ZONE, "Sent: 14:03 UTC, 26 Nov 2026 — 7 min ago",
                     id="utc-said-once"),
        pytest.param(at(23, 30), at(23, 31), ZURICH,
                     "Sent: 23:30 UTC (00:30 CET 27 Nov), 26 Nov 2026 — 1 min ago",
                     id="local-date-differs"),
    ],
)  # fmt: skip
def test_time_line_in_utc_and_zone_with_ago(
    t: float, now: float, zone: ZoneInfo, line: str
) -> None:
    msg = received(t=t)
    lines = body_lines(decision(message=msg, first_message=msg), now, zone)
    assert any(x.startswith(line) for x in lines), lines


def test_reminder_labels_the_latest_message_time() -> None:
    lines = body_lines(decision(Reason.REMINDED, incident=incident(reminders=1)))
    assert "Latest message: 14:03 UTC (15:03 CET), 26 Nov 2026 — 7 min ago" in lines


@pytest.mark.parametrize(
    ("lat", "lon", "coords"),
    [
        (46.12345, 7.12345, "46.12345, 7.12345"),
        (46.1, -7.123456789, "46.10000, -7.12346"),
        (-33.9, 151.2, "-33.90000, 151.20000"),
        (-0.000001, 0.0, "0.00000, 0.00000"),
    ],
)
def test_position_has_five_decimals_and_an_osm_link(lat: float, lon: float, coords: str) -> None:
    msg = received(lat=lat, lon=lon)
    lines = body_lines(decision(message=msg, first_message=msg))
    la, lo = coords.split(", ")
    assert f"Position: {coords}" in lines
    assert f"Map: https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map=14/{la}/{lo}" in lines


def test_no_gps_fix_falls_back_to_the_newest_known_position() -> None:
    no_fix = received(lat=None, lon=None)
    older = received(t=at(13, 20), lat=45.0, lon=6.0, id_=2)
    newer = received(t=at(13, 43), lat=46.0, lon=7.0, id_=3)
    d = decision(
        message=no_fix,
        first_message=older,
        device=Device("0-3537610", "Alice", "feed1", last=newer),
    )
    rendered = render(d, NOW, ZURICH)
    lines = rendered.body.splitlines()
    assert "Position: no GPS fix" in lines
    assert (
        "Last known position: 46.00000, 7.00000 at 13:43 UTC (14:43 CET), 26 Nov 2026 — 27 min ago"
        in lines
    )
    assert (
        "Map: https://www.openstreetmap.org/?mlat=46.00000&mlon=7.00000#map=14/46.00000/7.00000"
        in lines
    )
    assert "no GPS fix, last 46.00000,7.00000 (13:43Z)" in rendered.short
    assert "https://osm.org/?mlat=46.00000&mlon=7.00000" in rendered.short


def test_no_gps_fix_anywhere_has_no_map() -> None:
    no_fix = received(lat=None, lon=None)
    d = decision(message=no_fix, first_message=no_fix, device=Device("0-3537610", "Alice", "feed1"))
    rendered = render(d, NOW, ZURICH)
    assert "Position: no GPS fix" in rendered.body.splitlines()
    assert "Map:" not in rendered.body
    assert "Last known position" not in rendered.body
    assert "no GPS fix" in rendered.short
    assert "osm.org" not in rendered.short


# -- battery, text, HELP facts, what is still open ------------------------------------


@pytest.mark.parametrize(("battery", "line"), [("LOW", "Battery: LOW"), ("GOOD", "Battery: GOOD"),
                                              (None, "Battery: unknown")])  # fmt: skip
def test_battery(battery: str | None, line: str) -> None:
    msg = received(battery=battery)
    assert line in body_lines(decision(message=msg))


def test_message_text_is_shown_when_present() -> None:
    with_text = decision(message=received(content="Broken leg at the hut"))
    assert "Message: Broken leg at the hut" in body_lines(with_text)
    assert "Broken leg at the hut" in render(with_text, NOW, ZURICH).short
    assert not any(x.startswith("Message:") for x in body_lines(decision()))


def test_help_says_since_when_and_how_many_updates() -> None:
    first = received(t=at(13, 33), id_=7)
    lines = body_lines(decision(Reason.UPDATED, first_message=first, incident=incident(updates=4)))
    assert "HELP since: 13:33 UTC (14:33 CET), 26 Nov 2026 — 37 min ago" in lines
    assert "Updates: 4" in lines


@pytest.mark.parametrize(
    ("open_elsewhere", "line"),
    [(("Silent", "Low battery"), "Still open: Silent, Low battery"), ((), "Nothing else open")],
)
def test_what_is_still_open(open_elsewhere: tuple[str, ...], line: str) -> None:
    assert line in body_lines(decision(open_elsewhere=open_elsewhere))


@pytest.mark.parametrize(
    ("d", "ack_url", "shown"),
    [
        pytest.param(decision(), ACK, True, id="open-with-url"),
        pytest.param(
            decision(Reason.REMINDED, incident=incident(reminders=1)),
            ACK,
            True,
            id="reminder-with-url",
        ),
        pytest.param(decision(), None, False, id="no-url"),
        pytest.param(decision(Reason.RESOLVED), ACK, False, id="resolved"),
        pytest.param(decision(Reason.ACKNOWLEDGED), ACK, False, id="already-acknowledged"),
    ],
)
def test_acknowledge_line_only_for_an_open_incident_with_a_url(
    d: Decision, ack_url: str | None, shown: bool
) -> None:
    rendered = render(d, NOW, ZURICH, ack_url)
    assert (f"Acknowledge: {ACK}" in rendered.body.splitlines()) is shown
    assert ("Acknowledge:" in rendered.body) is shown
    if not shown:
        assert ACK not in rendered.short


# -- late and first-notice alerts -----------------------------------------------------


def test_late_alert_states_the_original_time() -> None:
    msg = received(t=at(11, 2))
    rendered = render(decision(late=True, message=msg, first_message=msg), at(14, 12), UTC_ZONE)
    lines = rendered.body.splitlines()
    assert lines[1] == "Late: sent 11:02 UTC, 3 h 10 min ago; the service only saw it now."
    assert rendered.short.startswith("HELP (late): Alice (Club)")
    assert "11:02Z 3h10m ago" in rendered.short


def test_cancel_first_heard_of_states_both_times() -> None:
    d = decision(
        Reason.RESOLVED,
        late=True,
        first_notice=True,
        first_message=received(t=at(11, 2)),
        message=received("HELP-CANCEL", t=at(11, 9), id_=2),
    )
    rendered = render(d, at(14, 12), UTC_ZONE)
    lines = rendered.body.splitlines()
    assert lines[0].startswith("HELP cancelled:")
    assert lines[1] == (
        "HELP sent at 11:02 UTC and cancelled at 11:09 UTC; both reached the service only now."
    )
    assert not any(x.startswith("Late:") for x in lines)
    assert "HELP sent 11:02Z, cancelled 11:09Z 3h03m ago" in rendered.short


def test_a_help_and_its_cancel_in_one_poll_say_so() -> None:
    d = decision(
        Reason.RESOLVED,
        first_notice=True,
        first_message=received(t=at(14, 1)),
        message=received("HELP-CANCEL", t=at(14, 3), id_=2),
    )
    lines = render(d, at(14, 4), UTC_ZONE).body.splitlines()
    assert lines[1] == (
        "HELP sent at 14:01 UTC and cancelled at 14:03 UTC; both reached the service in the "
        "same poll."
    )


# -- the SMS form ---------------------------------------------------------------------


def test_short_form_carries_the_ack_link_when_it_fits() -> None:
    short = render(decision(), NOW, ZURICH, ACK).short
    assert short.endswith(f"bat LOW {ACK}")
    assert len(short) <= SMS_ONE


def test_short_form_of_a_help() -> None:
    assert render(decision(), NOW, ZURICH).short == (
        "HELP: Alice (Club) 46.12345,7.12345 14:03Z 7m ago "
        "https://osm.org/?mlat=46.12345&mlon=7.12345 bat LOW"
    )


ORDINARY = [
    pytest.param(decision(), id="help"),
    pytest.param(decision(late=True), id="help-late"),
    pytest.param(decision(Reason.UPDATED), id="update"),
    pytest.param(decision(Reason.REMINDED, incident=incident(reminders=12)), id="reminder"),
    pytest.param(decision(Reason.ESCALATED), id="escalated"),
    pytest.param(decision(Reason.RESOLVED), id="cancelled"),
    pytest.param(decision(subject="Silent"), id="silent"),
    pytest.param(decision(Reason.RESOLVED, "Silent"), id="back-in-contact"),
    pytest.param(decision(subject="Unknown message"), id="unknown"),
    pytest.param(decision(Reason.ACKNOWLEDGED, "Low battery"), id="acknowledged"),
    pytest.param(decision(message=received(lat=None, lon=None)), id="no-fix-fallback"),
]


@pytest.mark.parametrize("d", ORDINARY)
def test_short_form_fits_one_segment_in_ordinary_cases(d: Decision) -> None:
    long_text = with_content(d, "Twisted ankle below the pass, waiting at the hut " * 4)
    for case in (d, long_text):
        short = render(case, NOW, ZURICH).short
        assert len(short) <= SMS_ONE, short
        # The acknowledgement link is worth a second segment, and is never cut.
        linked = render(case, NOW, ZURICH, ACK).short
        assert len(linked) <= SMS_TWO, linked
        assert (ACK in linked.split()) is (case.incident.state is IncidentState.OPEN)
    assert render(long_text, NOW, ZURICH).short.endswith("...")


@pytest.mark.parametrize("d", ORDINARY)
def test_short_form_never_exceeds_two_segments(d: Decision) -> None:
    name, feed = "Alexandra " * 6, ("Schweizer Alpen-Club " * 3)[:60]
    assert len(name) == len(feed) == 60
    big = replace(
        with_content(d, "x" * 200),
        device=replace(d.device, name=name),
        feed_name=feed,
    )
    short = render(big, NOW, ZURICH, ACK).short
    assert len(short) <= SMS_TWO, short
    assert "..." in short  # a name or the text was trimmed
    assert "no GPS fix" in short or "https://osm.org/?mlat=" in short  # where stayed in


def test_short_form_is_gsm_safe() -> None:
    d = decision(
        device=Device("0-3537610", "Zoë Müller", "feed1"),
        feed_name="Café Club",
        message=received(content="“Bin im Schnee” — 🙂 ßtraße [A]"),
    )
    rendered = render(d, NOW, ZURICH)
    assert rendered.short.startswith("HELP: Zoe Muller (Cafe Club)")
    assert '"Bin im Schnee" - sstrasse (A)' in rendered.short
    assert set(rendered.short) <= GSM_SAFE
    assert rendered.title == "HELP: Zoë Müller (Café Club)"  # the long form keeps the name


def test_short_form_uses_the_device_id_when_nothing_of_the_name_survives() -> None:
    d = decision(device=Device("0-3537610", "Алиса", "feed1"))
    assert render(d, NOW, ZURICH).short.startswith("HELP: 0-3537610 (Club)")


# -- admin notices and the test alert -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "subject", "title", "first_words", "severity"),
    [
        (AdminKind.FEED_FAILING, "Club", "Feed failing: Club", "Feed failing:", Severity.CRITICAL),
        (AdminKind.FEED_BLOCKED, "Club", "Feed blocked: Club", "Feed blocked:", Severity.CRITICAL),
        (AdminKind.FEED_RECOVERED, "Club", "Feed recovered: Club", "Feed recovered:",
         Severity.INFO),
        (AdminKind.DELIVERY_FAILING, "mailto://a…@example.org", "Delivery failing: mailto://a…@example.org",
         "Delivery failing:", Severity.WARNING),
        (AdminKind.DELIVERY_RECOVERED, "tgram://…", "Delivery recovered: tgram://…",
         "Delivery recovered:", Severity.INFO),
        (AdminKind.RULES_REJECTED, "rules/", "Rules rejected: rules/", "Rules rejected:",
         Severity.WARNING),
    ],
)  # fmt: skip
def test_admin_titles_and_first_words(
    kind: AdminKind, subject: str, title: str, first_words: str, severity: Severity
) -> None:
    notice = AdminNotice(kind, subject, "HTTP 503 Service Unavailable", at=at(14, 10),
                         since=at(13, 3))  # fmt: skip
    rendered = render_admin(notice, at(14, 10), ZURICH)
    assert rendered.title == title
    assert rendered.body.startswith(first_words)
    assert "Detail: HTTP 503 Service Unavailable" in rendered.body.splitlines()
    assert rendered.severity is severity
    assert len(rendered.short) <= SMS_ONE
    assert set(rendered.short) <= GSM_SAFE
    assert rendered.short.startswith(first_words)


def test_feed_blocked_says_what_the_service_does() -> None:
    notice = AdminNotice(AdminKind.FEED_BLOCKED, "Club", "HTTP 403", at=at(14, 10),
                         since=at(13, 3))  # fmt: skip
    body = render_admin(notice, at(14, 10), ZURICH).body
    assert "Since: 13:03 UTC (14:03 CET), 26 Nov 2026 — 1 h 07 min ago" in body.splitlines()
    assert (
        "SPOT answered 403: the IP or feed is blocked for polling too fast. This feed now waits "
        "hours between tries; the other feeds continue. Only an email to SPOT support restores "
        "a blocked feed." in body
    )


def test_recovery_states_how_long_it_failed() -> None:
    notice = AdminNotice(AdminKind.FEED_RECOVERED, "Club", "", at=at(14, 10), since=at(13, 3))
    rendered = render_admin(notice, at(14, 10), ZURICH)
    lines = rendered.body.splitlines()
    assert "Failing since: 13:03 UTC (14:03 CET), 26 Nov 2026 — 1 h 07 min ago" in lines
    assert "Outage: 1 h 07 min" in lines
    assert not any(x.startswith("Detail:") for x in lines)
    assert "after 1h07m down" in rendered.short


def test_render_test_is_unmistakably_a_test() -> None:
    rendered = render_test(NOW, ZURICH)
    assert rendered.title == "Test: spot-alerter test alert"
    first = rendered.body.splitlines()[0]
    assert "test" in first
    assert "nobody is in trouble" in first
    assert "no action is needed" in first
    assert rendered.severity is Severity.INFO
    assert rendered.short.startswith("Test: spot-alerter test alert")
    assert "Nobody is in trouble" in rendered.short
    assert len(rendered.short) <= SMS_ONE
