"""Escalation and reminders over hours, on a fake clock: the real `Processor.run` loop and
a real store; nothing sleeps for real and nothing is sent (the outbox rows are read).

Each step comes once, in order, counted from the opening; reminders come every `repeat`
to everyone reached so far; none of either once someone took the incident, whatever the
time; they start again only with a new incident (a new HELP after the cancel).
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerter.clock import FakeClock
from alerter.config import Config
from alerter.models import IncidentState, Message, Reason
from alerter.notify import load_targets
from alerter.process import Processor
from alerter.rules.loader import load_rules
from alerter.settings import FeedConfig, Settings, load_settings
from alerter.store import Store

T0 = 1_800_000_000
FEED = "FEED1"
DEVICE = "0-1"

RULES = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
        severity: critical
        repeat: 10m
        updates: 10m
        escalate:
          - after: 20m
            notify: [backup]
          - after: 45m
            notify: [sar]
      - name: help-cancel
        when: {type: [HELP-CANCEL]}
        resolves: help
        notify: [rescue]
"""
APPRISE = """
    rescue=json://127.0.0.1:9/rescue
    backup=json://127.0.0.1:9/backup
    sar=json://127.0.0.1:9/sar
"""

OPENED, UPDATED, REMINDED, ESCALATED, RESOLVED, ACKED = (
    Reason.OPENED, Reason.UPDATED, Reason.REMINDED, Reason.ESCALATED, Reason.RESOLVED,
    Reason.ACKNOWLEDGED,
)  # fmt: skip


class SegmentClock(FakeClock):
    """A fake clock whose sleeps end at `until`: `Processor.run` then stops there, as if
    a new message (or an acknowledgement) had woken it at that moment."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.until = float("inf")
        self.stop: asyncio.Event | None = None

    async def sleep(self, seconds: float) -> None:
        if self.t + max(0.0, seconds) >= self.until:
            self.t = self.until
            assert self.stop is not None
            self.stop.set()
            await asyncio.sleep(0)
            return
        await super().sleep(seconds)


class Story:
    """The service's processor on the fake clock; what it queued, minute by minute."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.clock = SegmentClock(T0)
        self.settings = make_settings(tmp_path)
        self.processor = self.new_processor()
        self.seen: set[int] = set()

    def new_processor(self) -> Processor:
        config = Config(
            load_rules(self.settings.rules, known_tags=None),
            load_targets(self.settings.apprise_config),
        )
        return Processor(self.settings, config, self.store, self.clock)

    async def run_until(self, minutes: float) -> None:
        """`Processor.run` from now until T0 + minutes (its cycles at the times it picks)."""
        stop = asyncio.Event()
        self.clock.until, self.clock.stop = T0 + minutes * 60, stop
        await asyncio.wait_for(self.processor.run(stop), timeout=60)
        assert self.clock.t == T0 + minutes * 60

    def arrive(self, id_: int, type_: str = "HELP") -> None:
        """A message sent now, stored by the watcher now (the next cycle decides it)."""
        m = Message(
            id=id_, messenger_id=DEVICE, messenger_name="Anna", unix_time=int(self.clock.t),
            type=type_, latitude=46.5, longitude=7.9,
        )  # fmt: skip
        self.store.insert_messages(FEED, [m], self.clock.now(), initial=False)

    def new(self) -> list[tuple[float, Reason, tuple[str, ...]]]:
        """Notifications queued since the last call: (minute, kind, targets by name)."""
        out: dict[int, tuple[float, Reason, list[str]]] = {}
        for d in self.store.pending_deliveries():
            if d.notification_id in self.seen:
                continue
            minute = (d.created_at - T0) / 60
            out.setdefault(d.notification_id, (minute, Reason(d.kind), []))[2].append(
                d.label.split("?")[0].rsplit("/", 1)[1]
            )
        self.seen |= set(out)
        return [(m, k, tuple(sorted(names))) for m, k, names in out.values()]


def make_settings(tmp_path: Path) -> Settings:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return load_settings(
        env_file=None,
        feeds=[FeedConfig(id=FEED, name="Club")],
        state_dir=tmp_path,
        rules=write("rules.yml", RULES),
        apprise_config=write("apprise.txt", APPRISE),
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "alerter.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def story(tmp_path: Path, store: Store) -> Story:
    return Story(tmp_path, store)


async def test_each_step_once_in_order_with_reminders_to_everyone_reached(story: Story) -> None:
    story.arrive(1)
    await story.run_until(3 * 60 - 1)

    r, rb, rbs = ("rescue",), ("backup", "rescue"), ("backup", "rescue", "sar")
    expected = [
        (0, OPENED, r),
        (10, REMINDED, r),
        (20, ESCALATED, ("backup",)),  # the new circle only
        (20, REMINDED, rb),
        (30, REMINDED, rb),
        (40, REMINDED, rb),
        (45, ESCALATED, ("sar",)),
        (50, REMINDED, rbs),
    ]
    expected += [(m, REMINDED, rbs) for m in range(60, 180, 10)]
    assert story.new() == expected
    [inc] = story.store.incidents()
    assert (inc.escalation, inc.reminders) == (2, 5 + 12)


async def test_a_restart_between_steps_takes_no_step_twice(story: Story) -> None:
    story.arrive(1)
    await story.run_until(25)
    story.processor = story.new_processor()  # `alerter run` restarted
    await story.run_until(60)

    escalations = [(m, who) for m, kind, who in story.new() if kind is ESCALATED]
    assert escalations == [(20, ("backup",)), (45, ("sar",))]


async def test_nothing_after_the_acknowledgement_whatever_the_time(story: Story) -> None:
    story.arrive(1)
    await story.run_until(27)
    story.new()

    outcome = story.processor.acknowledge(1, "Bob", "web:rescue")
    assert outcome.notified == 2
    assert story.new() == [(27, ACKED, ("backup", "rescue"))]  # everyone reached, once

    await story.run_until(24 * 60)
    assert story.new() == []  # no reminder, and the second step (45 min) never comes
    [inc] = story.store.incidents()
    assert (inc.state, inc.escalation) == (IncidentState.ACKNOWLEDGED, 1)


async def test_acknowledged_before_the_first_step_nobody_else_is_alerted(story: Story) -> None:
    story.arrive(1)
    await story.run_until(5)
    story.processor.acknowledge(1, "Bob", "cli")
    await story.run_until(6 * 60)

    assert story.new() == [(0, OPENED, ("rescue",)), (5, ACKED, ("rescue",))]


async def test_reminders_start_again_only_with_a_new_incident(story: Story) -> None:
    story.arrive(1)
    await story.run_until(22)  # escalated to backup at 20
    story.processor.acknowledge(1, "Bob", "cli")
    await story.run_until(60)
    story.arrive(2)  # Anna repeats HELP: an update of the taken incident, no reminders
    await story.run_until(120)
    story.arrive(3, "HELP-CANCEL")
    await story.run_until(125)
    story.arrive(4)  # a new HELP after the cancel: a new incident, reminded and escalated
    await story.run_until(125 + 51)

    assert story.new() == [
        (0, OPENED, ("rescue",)),
        (10, REMINDED, ("rescue",)),
        (20, ESCALATED, ("backup",)),
        (20, REMINDED, ("backup", "rescue")),
        (22, ACKED, ("backup", "rescue")),
        (60, UPDATED, ("backup", "rescue")),  # to everyone reached; the pace is not restarted
        (120, RESOLVED, ("backup", "rescue")),  # the end reaches everyone who was told
        (125, OPENED, ("rescue",)),
        (135, REMINDED, ("rescue",)),
        (145, ESCALATED, ("backup",)),
        (145, REMINDED, ("backup", "rescue")),
        (155, REMINDED, ("backup", "rescue")),
        (165, REMINDED, ("backup", "rescue")),
        (170, ESCALATED, ("sar",)),
        (175, REMINDED, ("backup", "rescue", "sar")),
    ]
    first, second = sorted(story.store.incidents(resolved_since=0), key=lambda i: i.id or 0)
    assert (first.id, first.state, first.acknowledged_by) == (1, IncidentState.RESOLVED, "Bob")
    assert (second.id, second.state, second.acknowledged_by) == (2, IncidentState.OPEN, None)
