"""The `alerter` command: check, test-notify, replay, status and run's refusals."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from alerter.cli import STATUS_HISTORY, main
from alerter.models import EngineEvent, HeldBack, Incident, IncidentState, Message, Reason
from alerter.spot.parse import parse_feed
from alerter.store import Store

if TYPE_CHECKING:
    from conftest import JsonReceiver

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FEED_ID = "0onlCLItestFEEDid000000000000001"
FEED_PASSWORD = "feed-pass-do-not-print"
TOKEN = "topsecret-header-value"


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Commands configure logging for a whole process; give the next test its own back."""
    loggers = [logging.getLogger(n) for n in ("", "apprise", "urllib3")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no .env, settings in the environment, default rules."""
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "ALERTER_FEEDS",
        json.dumps([{"id": FEED_ID, "password": FEED_PASSWORD, "name": "Club"}]),
    )
    monkeypatch.setenv("ALERTER_RULES", str(ROOT / "rules"))
    monkeypatch.setenv("ALERTER_APPRISE_CONFIG", str(tmp_path / "apprise.yml"))
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def write_targets(root: Path, receiver: JsonReceiver | None = None) -> None:
    port = receiver.port if receiver else 9
    (root / "apprise.yml").write_text(
        "urls:\n"
        f"  - json://127.0.0.1:{port}/rescue?+X-Token={TOKEN}:\n      tag: rescue\n"
        f"  - json://127.0.0.1:{port}/backup:\n      tag: rescue-backup\n"
        f"  - json://127.0.0.1:{port}/admin:\n      tag: admin\n"
    )


def test_check_prints_what_it_found_with_secrets_masked(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_targets(env)

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "feed Club: id 0onl…001, with password" in out
    assert "3 targets" in out
    assert "help (" in out
    assert "stale-track" in out
    assert out.rstrip().endswith("ok")
    for secret in (TOKEN, FEED_PASSWORD, FEED_ID):
        assert secret not in out + err


def test_check_reports_every_problem_with_file_and_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (env / "apprise.yml").write_text(
        f"urls:\n  - json://127.0.0.1:9/x:\n      tag: rescue\n  - bogus://{TOKEN}:\n"
        "      tag: admin\n"
    )
    rules = env / "rules.yml"
    rules.write_text(
        "rules:\n  - name: help\n    when: {type: [HELP]}\n    notfy: [rescue]\n"
        "  - name: x\n    when: {type: [OK]}\n    notify: [nobody]\n"
    )
    monkeypatch.setenv("ALERTER_RULES", str(rules))

    code = main(["check"])

    _, err = capsys.readouterr()
    assert code == 1
    assert f"{env / 'apprise.yml'}:4: Apprise cannot use this" in err
    assert f"{rules}:4:" in err
    assert "notfy" in err
    assert TOKEN not in err


def test_check_reports_a_tag_no_url_carries(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_targets(env)
    rules = env / "rules.yml"
    rules.write_text("rules:\n  - name: x\n    when: {type: [OK]}\n    notify: [nobody]\n")
    monkeypatch.setenv("ALERTER_RULES", str(rules))

    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert f"{rules}:4:" in err
    assert "tag 'nobody' is not carried by any Apprise URL" in err


def test_settings_below_spot_limits_are_refused(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTER_POLL_INTERVAL", "60")

    assert main(["check"]) == 2
    assert "ALERTER_POLL_INTERVAL: 60s is below SPOT's limit" in capsys.readouterr().err


def test_run_without_feeds_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERTER_FEEDS")
    write_targets(env)

    assert main(["run"]) == 2
    assert "ALERTER_FEEDS" in capsys.readouterr().err


def test_test_notify_reports_each_target_and_fails_if_one_failed(
    env: Path, capsys: pytest.CaptureFixture[str], json_receiver: JsonReceiver
) -> None:
    write_targets(env, json_receiver)
    json_receiver.fail("/admin")

    code = main(["test-notify"])

    out = capsys.readouterr().out
    assert code == 1
    assert [line.split()[0] for line in out.splitlines()] == ["ok", "ok", "FAILED"]
    assert TOKEN not in out
    [test] = json_receiver.accepted("/rescue")
    assert test["title"].startswith("Test:")
    assert "no action is needed" in test["message"]


def test_test_notify_one_tag(
    env: Path, capsys: pytest.CaptureFixture[str], json_receiver: JsonReceiver
) -> None:
    write_targets(env, json_receiver)

    assert main(["test-notify", "--tag", "rescue-backup"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert [p.path for p in json_receiver.posts] == ["/backup"]


@pytest.mark.parametrize(
    ("fixture", "titles"),
    [
        pytest.param(
            "wiseleyb_spot_tracker_sample-spot-data.xml",
            ["HELP cancelled: Spot2 (OneAtATime)"],
            id="help-and-cancel-in-one-poll",
        ),
        pytest.param(
            "vicb_flyXC_spot2.txt",
            ["Low battery: joe (parapente)", "HELP: joe (parapente)",
             "Low battery resolved: joe (parapente)"],
            id="json-help-and-low-battery",
        ),
    ],
)  # fmt: skip
def test_replay_prints_the_alerts_it_would_send(
    env: Path, capsys: pytest.CaptureFixture[str], fixture: str, titles: list[str]
) -> None:
    code = main(["replay", str(FIXTURES / fixture)])

    out = capsys.readouterr().out
    assert code == 0
    shown = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("=> to [")]
    assert shown[: len(titles)] == titles
    assert "dry run: nothing was sent" in out


def test_status_shows_feeds_devices_and_positions(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = parse_feed((FIXTURES / "wiseleyb_spot_tracker_sample-spot-data.xml").read_bytes())
    store = Store.open(env / "state" / "alerter.db")
    store.ensure_feed(FEED_ID, 1.0)
    store.record_request(FEED_ID, 2.0)
    store.record_success(FEED_ID, 2.0, "OneAtATime")
    store.insert_messages(FEED_ID, page.messages, 2.0, initial=True)
    store.close()

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert "Club: ok" in out
    assert f"{len(page.messages)} messages stored" in out
    assert "Spot2 (0-8356068): HELP-CANCEL" in out
    assert "no GPS fix" in out
    assert "open incidents: none" in out
    assert FEED_ID not in out


def state_with_open_help(root: Path, events: list[EngineEvent]) -> None:
    """A state database with Anna's HELP open as incident #1, with this history."""
    t0 = 1_700_000_000
    store = Store.open(root / "state" / "alerter.db")
    store.ensure_feed(FEED_ID, t0)
    store.record_success(FEED_ID, t0, "Club")
    store.insert_messages(
        FEED_ID,
        [
            Message(1, "0-1", "Anna", t0, "HELP", 46.5, 7.9),
            Message(2, "0-1", "Anna", t0 + 60, "HELP", 46.6, 7.9),
        ],
        t0 + 60,
        initial=False,
    )
    help_ = Incident(
        device_id="0-1", rule="help", state=IncidentState.OPEN, started_at=t0, opened_at=t0,
        updated_at=t0 + 60, first_message_id=1, last_message_id=2, last_notified_at=t0, id=1,
    )  # fmt: skip
    store.commit_evaluation(
        processed=[1, 2], incidents=[help_], events=events, outgoing=[], at=t0 + 60
    )
    store.close()


def test_status_shows_an_open_incidents_history_and_why_nobody_was_told(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = 1_700_000_000
    state_with_open_help(
        env,
        [
            EngineEvent(1, t0, Reason.OPENED, 1, notified=True),
            EngineEvent(1, t0 + 60, Reason.UPDATED, 2, notified=False,
                        held_back=HeldBack.UPDATE_TOO_SOON),
            EngineEvent(1, t0 + 61, Reason.UPDATED, 2, notified=False),  # before migration 2
        ],
    )  # fmt: skip

    assert main(["status"]) == 1  # an incident is open: something needs an admin

    out = capsys.readouterr().out
    assert "open incidents: 1" in out
    lines = out.splitlines()
    [header] = [i for i, line in enumerate(lines) if line.startswith("  #1 help for Anna: open")]
    history = [line.split(": ", 1)[1] for line in lines[header + 1 : header + 4]]
    assert history == [
        "opened; notified",
        f"updated; nobody told: {HeldBack.UPDATE_TOO_SOON.value}",
        "updated; nobody told: recorded only",
    ]
    assert f"nobody told: {HeldBack.UPDATE_TOO_SOON.value}" in out


def test_status_shows_only_the_latest_events_of_an_incident(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = 1_700_000_000
    held = list(HeldBack)
    events = [EngineEvent(1, t0, Reason.OPENED, 1, notified=True)] + [
        EngineEvent(1, t0 + i, Reason.UPDATED, 2, notified=False, held_back=held[i % len(held)])
        for i in range(1, STATUS_HISTORY + 2)
    ]
    state_with_open_help(env, events)

    assert main(["status"]) == 1  # an incident is open: something needs an admin

    out = capsys.readouterr().out
    shown = [line for line in out.splitlines() if line.startswith("    ")]
    assert len(shown) == STATUS_HISTORY
    assert not any("opened; notified" in line for line in shown)  # the oldest fell off
    assert shown[-1].endswith(f"nobody told: {held[(STATUS_HISTORY + 1) % len(held)].value}")


def test_check_prints_rule_warnings_and_still_succeeds(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_targets(env)
    rules = env / "rules.yml"
    rules.write_text(
        "rules:\n  - name: sos\n    when: {type: [SOS]}\n    notify: [rescue]\n"
        "    severity: critical\n"
    )
    monkeypatch.setenv("ALERTER_RULES", str(rules))

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.splitlines() == [
        f"warning: {rules}:3: rules[0] 'sos': when.type[0]: 'SOS' is not a message type SPOT "
        "is known to send: fine if SPOT adds it, but check the spelling (and `type: unknown` "
        "no longer catches it)"
    ]
    assert out.rstrip().endswith("ok")


# -- say when blind: configuration mistakes, all of them, in one clear pass -----------------


@pytest.mark.parametrize("where", ["environment", "dotenv"])
def test_check_reports_an_unknown_variable_with_a_did_you_mean(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    write_targets(env)
    if where == "environment":
        monkeypatch.setenv("ALERTER_TIMEZNE", "Europe/Zurich")
        expected = "ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?"
    else:
        (env / ".env").write_text("ALERTER_ADMIN_TAG=admin\nALERTER_TIMEZNE=Europe/Zurich\n")
        expected = ".env:2: ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?"

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [expected]
    assert not out.rstrip().endswith("ok")


def test_check_reports_bad_feeds_json_where_it_is_and_checks_the_rest(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = json.dumps([{"id": FEED_ID, "password": FEED_PASSWORD}])
    monkeypatch.setenv("ALERTER_FEEDS", "'" + feeds[:-1] + ' {"id": "0abc"}]' + "'")  # as docker
    (env / "apprise.yml").write_text(
        f"urls:\n  - json://127.0.0.1:9/x?+X-Token={TOKEN}:\n      - tag rescue\n"
        "  - json://127.0.0.1:9/b:\n      - tag: rescue-backup, admin\n"
    )

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 2
    column = len(feeds) + 1  # where the comma is missing, counted from 1
    assert err.splitlines() == [
        f"ALERTER_FEEDS: not valid JSON: Expecting ',' delimiter at line 1 column {column}",
        f"{env / 'apprise.yml'}:3: 'tag rescue' has no colon: write 'tag: rescue'",
    ]
    for secret in (FEED_PASSWORD, FEED_ID, TOKEN):
        assert secret not in out + err


@pytest.mark.parametrize(
    "quoted",
    [
        pytest.param(lambda v: f"'{v}'", id="single-quotes"),
        pytest.param(lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"',
                     id="double-quotes"),
    ],
)  # fmt: skip
def test_check_accepts_feeds_quoted_as_docker_env_file_passes_them(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, quoted: object
) -> None:
    write_targets(env)
    feeds = json.dumps([{"id": FEED_ID, "password": FEED_PASSWORD, "name": "Club"}])
    monkeypatch.setenv("ALERTER_FEEDS", quoted(feeds))  # type: ignore[operator]
    monkeypatch.setenv("ALERTER_TIMEZONE", "'Europe/Zurich'")

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "feed Club: id 0onl…001, with password" in out
    assert "time zone Europe/Zurich" in out


def _env_folder(path: Path) -> None:
    path.mkdir()


def _env_latin1(path: Path) -> None:
    path.write_bytes(b"ALERTER_ADMIN_TAG=\xe9quipe\n")


def _env_unreadable(path: Path) -> None:
    path.write_text("ALERTER_ADMIN_TAG=admin\n")
    path.chmod(0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_env_folder, ".env: cannot read: it is a folder, not a file", id="folder"),
        pytest.param(_env_latin1, ".env:1: not UTF-8 text (byte 0xe9): save it as UTF-8",
                     id="not-utf8"),
        pytest.param(_env_unreadable, ".env: cannot read: Permission denied", id="chmod-000",
                     marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["check", "run", "status", "test-notify"])
def test_an_unreadable_env_file_is_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], make: object, message: str, command: str
) -> None:
    write_targets(env)
    make(env / ".env")  # type: ignore[operator]

    code = main([command])

    out, err = capsys.readouterr()
    assert (code, err.splitlines(), out) == (2, [message], "")


def test_a_state_dir_that_cannot_be_created_is_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_targets(env)
    (env / "afile").write_text("")
    monkeypatch.setenv("ALERTER_STATE_DIR", "afile/state")

    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["ALERTER_STATE_DIR: cannot use afile/state: afile is not a folder"]

    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "alerter: cannot use the state directory afile/state: Not a directory "
        "(it must be writable by the service)"
    )
    assert "Traceback" not in err
    assert not (env / "afile" / "state").exists()


def test_a_state_path_the_system_refuses_is_one_line_not_a_traceback(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTER_STATE_DIR", "s" * 5000)  # longer than any file name may be

    code = main(["status"])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("alerter: ")
    assert "File name too long" in err


def test_check_lists_every_placeholder_of_the_example_apprise_config(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = ROOT / "deploy" / "apprise.example.yml"
    (env / "apprise.yml").write_text(example.read_text())
    url_lines = [
        n for n, line in enumerate(example.read_text().splitlines(), 1)
        if line.startswith("  - ") and "://" in line
    ]  # fmt: skip

    code = main(["check"])

    err = capsys.readouterr().err
    assert code == 1
    placeholders = [line for line in err.splitlines() if "placeholder left in this URL" in line]
    assert [int(line.split(":")[1]) for line in placeholders] == url_lines
    assert len(err.splitlines()) == len(url_lines)  # the rules' tags are all carried


def test_check_reports_every_problem_of_every_file_in_one_pass(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTER_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("ALERTER_TIMEZNE", "Europe/Zurich")
    (env / "apprise.yml").write_text(
        f"urls:\n  - json://127.0.0.1:9/x?+X-Token={TOKEN}:\n      - tag rescue\n"
        "  - json://:\n      - tag: admin\n"
    )
    rules = env / "rules.yml"
    rules.write_text(
        "rules:\n  - name: help\n    when: {type: [HELP]}\n    notify: [rescue]\n"
        "  - name: help\n    when: {type: [OK]}\n    notify: [nobody]\n"
    )
    monkeypatch.setenv("ALERTER_RULES", str(rules))

    code = main(["check"])

    out, err = capsys.readouterr()
    assert code == 2  # a setting itself is invalid
    assert [line.split(": ", 1)[0] for line in err.splitlines()] == [
        "ALERTER_TIMEZONE",
        "ALERTER_TIMEZNE",
        f"{env / 'apprise.yml'}:3",
        f"{env / 'apprise.yml'}:4",
        f"{rules}:5",
        f"{rules}:7",
    ]
    assert "tag 'nobody' is not carried by any Apprise URL (known: admin, rescue)" in err
    assert TOKEN not in out + err


def test_run_warns_of_an_unknown_variable_and_goes_on(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTER_TIMEZNE", "Europe/Zurich")  # no apprise.yml: run stops there

    assert main(["run"]) == 2

    err = capsys.readouterr().err
    assert "WARNING" in err
    assert "ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?" in err
    assert "apprise.yml: cannot read" in err  # it went on to read the rest
