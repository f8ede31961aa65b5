"""process: one cycle from stored messages to committed incidents, history and outbox rows.

A real store, a fake clock, rules and an Apprise config read from files; nothing is sent.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from alerter.clock import FakeClock
from alerter.config import Config
from alerter.models import (
    AdminKind,
    AdminNotice,
    EngineEvent,
    HeldBack,
    IncidentState,
    Message,
    Reason,
)
from alerter.notify import Targets, load_targets
from alerter.process import Processor
from alerter.rules.loader import load_rules
from alerter.settings import FeedConfig, Settings, load_settings
from alerter.store import Store

T0 = 1_800_000_000
FEED = "FEED1"
DEVICE = "0-1"

HELP_RULE = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
        severity: critical
        updates: 15m
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "s.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        env_file=None,
        feeds=[FeedConfig(id=FEED, name="Club")],
        state_dir=tmp_path,
        rules=tmp_path / "rules.yml",
        apprise_config=tmp_path / "apprise.txt",
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def targets_of(path: Path, text: str) -> Targets:
    return load_targets(write(path, text))


def config(
    tmp_path: Path, rules: str = HELP_RULE, apprise: str = "rescue=json://127.0.0.1:9/x\n"
) -> Config:
    targets = targets_of(tmp_path / "apprise.txt", apprise)
    # known_tags=None: the loader accepts a tag no URL carries (the processor must cope).
    return Config(load_rules(write(tmp_path / "rules.yml", rules), known_tags=None), targets)


def message(id_: int, at: int, type_: str = "HELP") -> Message:
    return Message(
        id=id_, messenger_id=DEVICE, messenger_name="Anna", unix_time=at, type=type_,
        latitude=46.5, longitude=7.9,
    )  # fmt: skip


def arrive(store: Store, clock: FakeClock, *messages: Message) -> None:
    """The watcher stored these messages at the clock's time."""
    store.insert_messages(FEED, list(messages), clock.now(), initial=False)


def test_a_help_opens_an_incident_and_queues_it_for_the_rescue_target(
    tmp_path: Path, settings: Settings, store: Store, clock: FakeClock
) -> None:
    cfg = config(tmp_path)
    [rescue] = cfg.targets.targets
    processor = Processor(settings, cfg, store, clock)
    arrive(store, clock, message(1, T0 - 30))

    processor.process()

    [inc] = store.incidents()
    assert (inc.rule, inc.device_id, inc.state) == ("help", DEVICE, IncidentState.OPEN)
    assert inc.id is not None
    assert store.history(inc.id) == [EngineEvent(inc.id, T0, Reason.OPENED, 1, True, None)]
    [d] = store.pending_deliveries()
    assert (d.target, d.incident_id, d.kind) == (rescue.id, inc.id, Reason.OPENED.value)
    assert d.title.startswith("HELP")
    assert store.pending() == []  # the message was marked processed in the same commit


@pytest.mark.parametrize(
    ("gap", "event", "deliveries"),
    [
        pytest.param(60, (False, HeldBack.UPDATE_TOO_SOON), 1, id="a-minute-later-held-back"),
        pytest.param(16 * 60, (True, None), 2, id="after-updates-sends-an-update"),
    ],
)
def test_a_repeated_help_updates_the_incident_at_most_once_per_updates(
    tmp_path: Path,
    settings: Settings,
    store: Store,
    clock: FakeClock,
    gap: int,
    event: tuple[bool, HeldBack | None],
    deliveries: int,
) -> None:
    processor = Processor(settings, config(tmp_path), store, clock)
    arrive(store, clock, message(1, T0))
    processor.process()

    clock.advance(gap)
    arrive(store, clock, message(2, T0 + gap))
    processor.process()

    [inc] = store.incidents()
    assert inc.id is not None
    notified, held_back = event
    assert store.history(inc.id)[1:] == [
        EngineEvent(inc.id, T0 + gap, Reason.UPDATED, 2, notified, held_back)
    ]
    assert len(store.pending_deliveries()) == deliveries


def test_a_rule_whose_tag_no_url_carries_records_why_nobody_was_told(
    tmp_path: Path, settings: Settings, store: Store, clock: FakeClock
) -> None:
    cfg = config(tmp_path, rules=HELP_RULE.replace("[rescue]", "[nobody]"))
    assert cfg.targets.for_tags(["nobody"]) == []
    processor = Processor(settings, cfg, store, clock)
    arrive(store, clock, message(1, T0))

    processor.process()

    [inc] = store.incidents()
    assert inc.id is not None
    assert store.history(inc.id) == [
        EngineEvent(inc.id, T0, Reason.OPENED, 1, False, HeldBack.NO_TARGET)
    ]
    assert store.pending_deliveries() == []


def test_use_decides_the_next_cycle_with_the_new_rules_and_targets(
    tmp_path: Path, settings: Settings, store: Store, clock: FakeClock
) -> None:
    custom_only = HELP_RULE.replace("name: help", "name: custom").replace("HELP", "CUSTOM")
    processor = Processor(settings, config(tmp_path / "old", custom_only), store, clock)
    arrive(store, clock, message(1, T0))
    processor.process()
    assert store.incidents() == []  # the old rules ignore a HELP

    new = config(tmp_path, HELP_RULE, "rescue=json://127.0.0.1:9/new\n")
    processor.use(new)
    assert processor.changed.is_set()  # the run loop does not sleep through the reload
    clock.advance(60)
    arrive(store, clock, message(2, T0 + 60), message(3, T0 + 61, "CUSTOM"))
    processor.process()

    [inc] = store.incidents()
    assert (inc.rule, inc.first_message_id) == ("help", 2)  # the new rule; the old one is gone
    [d] = store.pending_deliveries()
    assert d.target == new.targets.targets[0].id


# -- a message that cannot be decided, an alert that cannot be rendered --------------------


def test_a_message_that_cannot_be_decided_is_set_aside_and_the_rest_go_on(
    tmp_path: Path,
    settings: Settings,
    store: Store,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine fails on one message (a bug no test foresaw): the batch is decided one
    message at a time, the bad one is set aside with its reason and the admins are told;
    the HELP beside it is alerted in the same cycle."""
    import alerter.process  # noqa: PLC0415

    real = alerter.process.evaluate

    def failing_on_42(*args: Any, **kw: Any) -> Any:
        if any(r.message.id == 42 for r in args[2]):
            raise ValueError("year 10000 is out of range")
        return real(*args, **kw)

    monkeypatch.setattr(alerter.process, "evaluate", failing_on_42)
    notices: list[AdminNotice] = []
    processor = Processor(
        settings, config(tmp_path), store, clock,
        raise_notice=lambda notice, exclude: notices.append(notice),
    )  # fmt: skip
    odd = replace(message(42, T0 - 60, "TRACK"), messenger_id="0-2", messenger_name="Ben")
    arrive(store, clock, odd, message(1, T0 - 30))

    processor.process()

    [inc] = store.incidents()
    assert (inc.rule, inc.device_id) == ("help", DEVICE)  # the HELP went on
    assert [d.title.split(":")[0] for d in store.pending_deliveries()] == ["HELP"]
    assert store.pending() == []  # nothing left to retry for ever
    row = store.conn.execute("SELECT set_aside FROM messages WHERE id = 42").fetchone()
    assert row[0] == "ValueError: year 10000 is out of range"
    [notice] = notices
    assert (notice.kind, notice.subject) == (AdminKind.MESSAGE_SET_ASIDE, "Ben (0-2)")
    assert "TRACK message id 42" in notice.detail

    processor.process()  # the next cycle does not try it again
    assert len(notices) == 1


def test_an_alert_that_cannot_be_rendered_goes_out_plain(
    tmp_path: Path,
    settings: Settings,
    store: Store,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import alerter.process  # noqa: PLC0415

    def broken(*args: Any, **kw: Any) -> Any:
        raise ValueError("an odd value")

    monkeypatch.setattr(alerter.process, "render", broken)
    processor = Processor(settings, config(tmp_path), store, clock)
    arrive(store, clock, message(1, T0 - 30))

    processor.process()

    [d] = store.pending_deliveries()
    assert d.title == "HELP: Anna (Club)"
    assert "Position: 46.5, 7.9" in d.body
    assert "(Some details could not be shown: ValueError.)" in d.body
