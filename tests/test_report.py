"""The report behind `alerter status`, `alerter status --json` and `/status`: what it says,
what needs an admin (the exit code), and that it never carries a secret."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from alerter import masking, report
from alerter.cli import main
from alerter.models import (
    EngineEvent,
    FeedErrorKind,
    FeedStatus,
    HeldBack,
    Incident,
    IncidentState,
    Message,
    Outgoing,
    Reason,
    Rendered,
    Severity,
    TargetHealth,
)
from alerter.settings import FeedConfig, Settings, load_settings, mask_id
from alerter.store import Store
from alerter.vitals import Health

FEED_ID = "0onlREPORTtestFEEDid0000000007"
OLD_FEED_ID = "0onlREPORTtestOLDfeed000000008"
PASSWORD = "pw-Rk4Tz8Nq2Wv6"
HEALTHY = Health(healthy=True, blind=False, reasons=())
STUCK_AFTER = 900.0


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)
    # Nothing registered: the report masks the settings' secrets by itself.
    monkeypatch.setattr(masking, "REGISTRY", masking.Registry())


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "feeds": [FeedConfig(id=FEED_ID, password=PASSWORD, name="Club")],
        "state_dir": tmp_path / "state",
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


def help_state(store: Store, now: float) -> None:
    """Club answers; Anna's HELP is open with two events; Bob's last message has no fix."""
    store.ensure_feed(FEED_ID, now - 3600)
    store.record_request(FEED_ID, now - 60)
    store.record_success(FEED_ID, now - 60, "SPOT name")
    store.insert_messages(
        FEED_ID,
        [
            Message(1, "0-1", "Anna", int(now) - 600, "HELP", 46.5, 7.9, battery="LOW"),
            Message(2, "0-2", "bob", int(now) - 500, "TRACK"),
        ],
        now - 60,
        initial=False,
    )
    inc = Incident(
        "0-1", "help", IncidentState.OPEN, now - 600, now - 60, now - 600, 1, 1, now - 60, id=1,
        reminders=2, escalation=1,
    )  # fmt: skip
    store.commit_evaluation(
        processed=[1, 2], incidents=[inc],
        events=[EngineEvent(1, now - 60, Reason.OPENED, 1, True),
                EngineEvent(1, now - 30, Reason.UPDATED, 1, False, HeldBack.ALREADY_OPEN),
                EngineEvent(1, now - 20, Reason.UPDATED, 1, False)],
        outgoing=[], at=now - 60,
    )  # fmt: skip


# -- build ------------------------------------------------------------------------------------


def test_the_report_says_feeds_devices_incidents_and_the_outbox(
    tmp_path: Path, store: Store
) -> None:
    now = 1_800_000_000.0
    help_state(store, now)
    store.enqueue(
        [Outgoing(Rendered("t", "b", "s", Severity.INFO), "Test", (("x", "json://a", False),))],
        now - 5,
    )

    got = report.build(store, make_settings(tmp_path), now, HEALTHY)

    assert json.loads(json.dumps(got)) == got  # ready for JSON as it is
    assert got["generated_at"] == "2027-01-15T08:00:00Z"
    assert got["feeds"] == [
        {
            "name": "Club", "status": "ok", "watched": True,
            "last_poll": "2027-01-15T07:59:00Z", "last_good_answer": "2027-01-15T07:59:00Z",
            "failures": 0, "error_kind": None, "last_error": None, "messages_stored": 2,
        }
    ]  # fmt: skip
    assert got["devices"] == [
        {
            "name": "Anna", "id": "0-1", "feed": "Club",
            "last_message": {
                "type": "HELP", "time": "2027-01-15T07:50:00Z",
                "position": {"latitude": 46.5, "longitude": 7.9, "altitude": None},
                "battery": "LOW",
            },
        },
        {
            "name": "bob", "id": "0-2", "feed": "Club",
            "last_message": {"type": "TRACK", "time": "2027-01-15T07:51:40Z",
                             "position": None, "battery": None},
        },
    ]  # fmt: skip
    [incident] = got["incidents"]
    assert incident["device"] == {"name": "Anna", "id": "0-1"}
    assert (incident["state"], incident["since"]) == ("open", "2027-01-15T07:50:00Z")
    assert (incident["reminders"], incident["escalation"]) == (2, 1)
    assert [(e["reason"], e["notified"], e["held_back"]) for e in incident["events"]] == [
        ("opened", True, None),
        ("updated", False, HeldBack.ALREADY_OPEN.value),
        ("updated", False, None),
    ]
    assert got["outbox"] == {
        "pending": 1, "sent": 0, "dropped": 0, "oldest_pending": "2027-01-15T07:59:55Z",
    }  # fmt: skip
    assert got["health"] == {
        "status": "ok", "blind": False, "reasons": [], "checked_at": "2027-01-15T08:00:00Z",
        "judged_by": "service",
    }  # fmt: skip
    assert got["needs_admin"] == ["incident #1 help for Anna is open"]


def test_an_incident_shows_only_its_latest_events(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    help_state(store, now)
    store.commit_evaluation(
        processed=[], incidents=[],
        events=[EngineEvent(1, now - 10 + i / 100, Reason.UPDATED, 1, False, HeldBack.HISTORY)
                for i in range(report.HISTORY)],
        outgoing=[], at=now,
    )  # fmt: skip

    [incident] = report.build(store, make_settings(tmp_path), now, HEALTHY)["incidents"]

    assert len(incident["events"]) == report.HISTORY
    assert {e["held_back"] for e in incident["events"]} == {HeldBack.HISTORY.value}


@pytest.mark.parametrize(
    ("kind", "since_success", "expected"),
    [
        pytest.param(FeedErrorKind.UNAVAILABLE, 60, [], id="a-short-outage-is-not-yet-failing"),
        pytest.param(FeedErrorKind.UNAVAILABLE, 3600, ["feed Club is failing"], id="failing"),
        pytest.param(FeedErrorKind.BLOCKED, 60, ["feed Club is blocked"], id="blocked-at-once"),
        pytest.param(FeedErrorKind.CONFIG, 60, ["feed Club is failing"], id="config-at-once"),
    ],
)
def test_a_watched_feed_in_trouble_needs_an_admin(
    tmp_path: Path, store: Store, kind: FeedErrorKind, since_success: float, expected: list[str]
) -> None:
    now = 1_800_000_000.0
    store.ensure_feed(FEED_ID, now - 7200)
    store.record_success(FEED_ID, now - since_success, None)
    store.record_failure(FEED_ID, now - 10, kind, "HTTP 503", None)
    store.set_meta("started_at", repr(now - 7200))

    got = report.build(store, make_settings(tmp_path), now, HEALTHY)

    assert got["needs_admin"] == expected
    [feed] = got["feeds"]
    assert (feed["failures"], feed["error_kind"], feed["last_error"]) == (1, kind.value, "HTTP 503")


def test_a_feed_no_longer_watched_is_listed_but_needs_nobody(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    store.ensure_feed(OLD_FEED_ID, now - 7200)
    store.record_failure(OLD_FEED_ID, now - 10, FeedErrorKind.BLOCKED, "HTTP 403", None)

    got = report.build(store, make_settings(tmp_path), now, HEALTHY)

    assert [(f["name"], f["status"], f["watched"]) for f in got["feeds"]] == [
        (mask_id(OLD_FEED_ID), "blocked", False)
    ]
    assert got["needs_admin"] == []


def test_a_target_failing_needs_an_admin_once_they_were_told(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    store.set_target_health(TargetHealth("a", "json://a/***", 1, now - 20, told=False))
    store.set_target_health(TargetHealth("b", "json://b/***", 3, now - 90, told=True))
    store.set_target_health(TargetHealth("c", "json://c/***", 0, None, told=False))

    got = report.build(store, make_settings(tmp_path), now, HEALTHY)

    assert got["needs_admin"] == ["target json://b/*** is failing (3 attempts)"]
    assert [(t["label"], t["failing"], t["admins_told"]) for t in got["targets"]] == [
        ("json://a/***", True, False),
        ("json://b/***", True, True),
        ("json://c/***", False, False),
    ]


def test_the_report_never_holds_a_feed_id_or_a_secret(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    help_state(store, now)
    # As an older version stored it: the password in clear in the error.
    store.record_failure(
        FEED_ID, now - 5, FeedErrorKind.UNAVAILABLE, f"bad body: password={PASSWORD}", None
    )
    health = Health(False, True, (f"the state cannot be written: {PASSWORD}",))
    settings = make_settings(tmp_path, status_token="tok-Hq3Ls9Df5Jk1")

    got = report.build(store, settings, now, health)
    out = json.dumps(got) + report.text(got)

    assert "bad body: password=***" in out
    for secret in (FEED_ID, PASSWORD, "tok-Hq3Ls9Df5Jk1"):
        assert secret not in out


# -- text -------------------------------------------------------------------------------------


def test_the_text_form_says_what_status_always_said(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    help_state(store, now)

    text = report.text(report.build(store, make_settings(tmp_path), now, HEALTHY))

    assert text.splitlines() == [
        "feeds:",
        "  Club: ok; last poll 1 min ago; last good answer 1 min ago; 2 messages stored",
        "devices:",
        "  Anna (0-1): HELP 10 min ago, 46.50000, 7.90000, battery LOW",
        "  bob (0-2): TRACK 8 min ago, no GPS fix",
        "open incidents: 1",
        "  #1 help for Anna: open since 10 min ago, 2 reminders, escalation 1",
        "    1 min ago: opened; notified",
        f"    30s ago: updated; nobody told: {HeldBack.ALREADY_OPEN.value}",
        "    20s ago: updated; nobody told: recorded only",
        "outbox: 0 pending, 0 sent, 0 dropped",
        "health (service): ok",
        "needs an admin:",
        "  - incident #1 help for Anna is open",
    ]


# -- the verdict as the state knows it ----------------------------------------------------------


def test_the_state_judges_the_loop_by_the_services_last_write_probe(
    tmp_path: Path, store: Store
) -> None:
    now = 1_800_000_000.0
    settings = make_settings(tmp_path)
    store.set_meta("started_at", repr(now - 3600))
    store.probe_write(now - 20)
    assert report.state_health(store, settings, now, stuck_after=STUCK_AFTER) == HEALTHY

    store.probe_write(now - 400)  # the service stopped (or stalled) 400 s ago
    got = report.state_health(store, settings, now, stuck_after=STUCK_AFTER)
    assert got.reasons == ("the processing loop has not run for 400s",)

    store.probe_write(now)
    store.ensure_feed(FEED_ID, now - 3600)
    store.record_failure(FEED_ID, now - 10, FeedErrorKind.BLOCKED, "HTTP 403", None)
    got = report.state_health(store, settings, now, stuck_after=STUCK_AFTER)
    assert (got.healthy, got.blind) == (False, True)
    assert got.reasons == ("every feed is failing: Club (blocked)",)


def test_metrics_reading(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    help_state(store, now)
    store.ensure_feed(OLD_FEED_ID, now - 99)  # not watched any more: not measured
    store.enqueue(
        [Outgoing(Rendered("t", "b", "s", Severity.INFO), "Test", (("x", "json://a", False),))],
        now - 5,
    )
    store.set_target_health(TargetHealth("a", "json://a/***", 2, now - 20, told=False))
    store.set_target_health(TargetHealth("b", "json://b/***", 0, None, told=False))

    got = report.metrics_reading(store, make_settings(tmp_path), now, HEALTHY)

    assert dict(got.incidents_open) == {"help": 1}
    assert (got.outbox_pending, got.outbox_oldest_age) == (1, 5.0)
    assert dict(got.feed_silence) == {"Club": 60.0}
    assert dict(got.targets_failing) == {"json://a/***": True, "json://b/***": False}
    assert (got.healthy, got.blind) == (True, False)


# -- alerter status [--json] ------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "ALERTER_FEEDS", json.dumps([{"id": FEED_ID, "password": PASSWORD, "name": "Club"}])
    )
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def without_times(r: dict[str, Any]) -> dict[str, Any]:
    r = dict(r, generated_at=None)
    r["health"] = dict(r["health"], checked_at=None)
    return r


def test_status_json_prints_the_report_and_exits_1_while_an_incident_is_open(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    store = Store.open(env / "state" / "alerter.db")
    help_state(store, now)
    store.set_meta("started_at", repr(now - 3600))
    store.probe_write(now)
    expected = report.build(
        store, make_settings(env), now,
        report.state_health(store, make_settings(env), now, stuck_after=STUCK_AFTER),
        judged_by="state database",
    )  # fmt: skip
    store.close()

    code = main(["status", "--json"])

    printed = json.loads(capsys.readouterr().out)
    assert code == 1
    assert without_times(printed) == without_times(expected)
    assert printed["health"]["status"] == "ok"
    assert printed["needs_admin"] == ["incident #1 help for Anna is open"]

    code = main(["status"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.rstrip().endswith("needs an admin:\n  - incident #1 help for Anna is open")


@pytest.mark.parametrize("as_json", [False, True])
def test_status_exits_0_when_all_is_well(
    env: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    now = time.time()
    store = Store.open(env / "state" / "alerter.db")
    store.ensure_feed(FEED_ID, now - 3600)
    store.record_success(FEED_ID, now - 30, None)
    store.set_target_health(TargetHealth("a", "json://a/***", 1, now - 20, told=False))
    store.close()

    code = main(["status", "--json"] if as_json else ["status"])

    out = capsys.readouterr().out
    assert code == 0
    assert "needs an admin" not in out
    assert FEED_ID not in out
    if as_json:
        assert json.loads(out)["needs_admin"] == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            lambda s, now: s.record_failure(FEED_ID, now, FeedErrorKind.BLOCKED, "403", None),
            "feed Club is blocked",
            id="feed-blocked",
        ),
        pytest.param(
            lambda s, now: s.set_target_health(TargetHealth("a", "json://a", 3, now, told=True)),
            "target json://a is failing (3 attempts)",
            id="target-failing",
        ),
    ],
)
def test_status_exits_1_when_something_needs_an_admin(
    env: Path, capsys: pytest.CaptureFixture[str], setup: Any, expected: str
) -> None:
    now = time.time()
    store = Store.open(env / "state" / "alerter.db")
    store.ensure_feed(FEED_ID, now - 3600)
    setup(store, now)
    store.close()

    assert main(["status", "--json"]) == 1
    # With its only feed blocked the service is blind, which it says first.
    assert json.loads(capsys.readouterr().out)["needs_admin"][-1] == expected
    assert main(["status"]) == 1
    assert f"  - {expected}" in capsys.readouterr().out


def test_state_health_feeds_use_display_names(tmp_path: Path, store: Store) -> None:
    now = 1_800_000_000.0
    store.ensure_feed(FEED_ID, now)
    assert report.feed_statuses(store, make_settings(tmp_path), now) == {"Club": FeedStatus.OK}
