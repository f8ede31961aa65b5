"""engine: decision tables, and multi-cycle stories fed back the way the store does it.

Time is only ever the `now` handed to `evaluate`; nothing here sleeps or touches a disk.
A `Story` plays the store's part between cycles: it records each batch on the devices
(last message, rhythm, newest time per type) before evaluating, as `Store.insert_messages`
does, and feeds every incident an evaluation created or changed into the next snapshot.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from alerter.engine import (
    EngineConfig,
    Evaluation,
    Snapshot,
    evaluate,
    recipients,
    silence_threshold,
)
from alerter.models import (
    Decision,
    Device,
    Incident,
    IncidentState,
    Message,
    Reason,
    Received,
    Severity,
)
from alerter.rhythm import merge_recent_times
from alerter.rules.loader import load_rules
from alerter.rules.schema import Rule, RuleSet, SilentFor

DEFAULT_RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.yml")

M = 60
H = 3600
T = 1_700_000_000  # when each story's first message is sent
START = T + 10 * H  # a first start: the service reads the feeds' history for the first time

OPENED, UPDATED, REMINDED = Reason.OPENED, Reason.UPDATED, Reason.REMINDED
ESCALATED, RESOLVED = Reason.ESCALATED, Reason.RESOLVED
RESCUE = ("rescue",)
RESCUE_ALL = ("rescue", "rescue-backup")


# --- factories -------------------------------------------------------------------------

_ids = itertools.count(1)


def msg(
    type_: str,
    at: int,
    *,
    device: str = "dev1",
    name: str | None = None,
    feed: str = "feed1",
    battery: str | None = None,
    id_: int | None = None,
    received_at: float | None = None,
    initial: bool = False,
    fix: bool = True,
) -> Received:
    """A stored message: sent at `at`, received then unless told otherwise."""
    message = Message(
        id=next(_ids) if id_ is None else id_, messenger_id=device,
        messenger_name=name or f"{device} SPOT", unix_time=at, type=type_,
        latitude=46.5 if fix else None, longitude=7.5 if fix else None, battery=battery,
    )  # fmt: skip
    return Received(
        message=message,
        feed_id=feed,
        received_at=float(at if received_at is None else received_at),
        initial=initial,
    )


def help_(at: int, **kw: Any) -> Received:
    return msg("HELP", at, **kw)


def cancel(at: int, **kw: Any) -> Received:
    return msg("HELP-CANCEL", at, **kw)


def track(at: int, **kw: Any) -> Received:
    return msg("TRACK", at, **kw)


def tracks(last: int, count: int, every: int) -> list[Received]:
    """A device tracking at a steady rhythm, its last message sent at `last`."""
    return [track(last - i * every) for i in reversed(range(count))]


def history(type_: str, ago: int, **kw: Any) -> Received:
    """A message already in the feed at first start, sent `ago` seconds before it."""
    return msg(type_, START - ago, initial=True, received_at=START, **kw)


def rule(name: str, when: dict[str, Any], **fields: Any) -> Rule:
    return Rule.model_validate({"name": name, "when": when, **fields})


def help_rule(**fields: Any) -> Rule:
    return rule(
        "help", {"type": ["HELP"]}, **{"notify": ["rescue"], "severity": "critical", **fields}
    )


CANCEL_RULE = rule("help-cancel", {"type": ["HELP-CANCEL"]}, resolves="help", notify=["rescue"])


def ruleset(*rules: Rule) -> RuleSet:
    return RuleSet(rules=rules)


def _order(rec: Received) -> tuple[int, int]:
    return rec.message.unix_time, rec.message.id


def heard(device: Device | None, batch: Sequence[Received]) -> Device:
    """`device` after the store recorded `batch` (one device's new messages)."""
    newest = max(batch, key=_order)
    last = device.last if device is not None else None
    by_type = dict(device.last_by_type) if device is not None else {}
    for rec in batch:
        m = rec.message
        by_type[m.type] = max(by_type.get(m.type, m.unix_time), m.unix_time)
    return Device(
        id=newest.message.messenger_id,
        name=newest.message.messenger_name,
        feed_id=newest.feed_id,
        last=newest if last is None or _order(newest) > _order(last) else last,
        recent_times=tuple(
            merge_recent_times(
                device.recent_times if device is not None else (),
                (r.message.unix_time for r in batch),
            )
        ),
        last_by_type=by_type,
    )


def incident(**kw: Any) -> Incident:
    base = Incident(
        device_id="dev1", rule="help", state=IncidentState.OPEN,
        started_at=T, opened_at=T, updated_at=T, id=1,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


Cycle = tuple[float, tuple[Received, ...]]


def cycle(now: float, *batch: Received) -> Cycle:
    """One engine cycle: the time it runs and the messages stored since the previous one."""
    return now, batch


@dataclass
class Story:
    """The store's side of successive engine cycles."""

    rules: RuleSet = DEFAULT_RULES
    config: EngineConfig = field(default_factory=EngineConfig)
    feed_names: dict[str, str] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    incidents: dict[int, Incident] = field(default_factory=dict)
    messages: dict[int, Received] = field(default_factory=dict)
    next_incident_id: int = 1

    def step(self, now: float, *batch: Received) -> Evaluation:
        """Store `batch`, evaluate it at `now`, keep what the evaluation changed."""
        by_device: dict[str, list[Received]] = {}
        for rec in batch:
            by_device.setdefault(rec.message.messenger_id, []).append(rec)
        for device_id, recs in by_device.items():
            self.devices[device_id] = heard(self.devices.get(device_id), recs)
        snapshot = Snapshot(
            devices=dict(self.devices),
            incidents=tuple(self.incidents.values()),
            messages=dict(self.messages),
            feed_names=self.feed_names,
            next_incident_id=self.next_incident_id,
        )
        result = evaluate(self.rules, snapshot, batch, now, self.config)
        self.messages.update((rec.message.id, rec) for rec in batch)
        for inc in result.incidents:
            assert inc.id is not None
            self.incidents[inc.id] = inc
            self.next_incident_id = max(self.next_incident_id, inc.id + 1)
        return result

    def run(self, *cycles: Cycle) -> list[Decision]:
        """Every decision of these cycles, in order."""
        return [d for now, batch in cycles for d in self.step(now, *batch).decisions]

    def clock(self, *times: float) -> list[Decision]:
        """Cycles with no new message: only the passing of time."""
        return self.run(*(cycle(now) for now in times))

    def only(self, rule_name: str) -> Incident:
        """The one incident this rule ever had."""
        [inc] = [i for i in self.incidents.values() if i.rule == rule_name]
        return inc

    def acknowledge(self, rule_name: str) -> None:
        """Someone took the rule's incident (what the ack page writes to the store)."""
        inc = self.only(rule_name)
        assert inc.id is not None
        self.incidents[inc.id] = dataclasses.replace(inc, state=IncidentState.ACKNOWLEDGED)


def outline(decisions: Iterable[Decision]) -> list[tuple[Reason, str, tuple[str, ...]]]:
    return [(d.reason, d.rule, d.tags) for d in decisions]


# --- silence threshold and recipients --------------------------------------------------

RELATIVE = SilentFor.model_validate({"times_usual_gap": 3, "at_least": "30m"})
PURELY_RELATIVE = SilentFor.model_validate({"times_usual_gap": 3})


def every(gap: int, count: int = 5) -> tuple[int, ...]:
    return tuple(T - i * gap for i in range(count))


@pytest.mark.parametrize(
    ("silent_for", "recent_times", "expected"),
    [
        pytest.param(45 * M, (), 45 * M, id="fixed"),
        pytest.param(45 * M, every(60), 45 * M, id="fixed-ignores-rhythm"),
        pytest.param(RELATIVE, (), 30 * M, id="no-history-at-least"),
        pytest.param(RELATIVE, (T, T - 20 * M), 30 * M, id="one-gap-is-no-rhythm"),
        pytest.param(RELATIVE, every(10 * M), 30 * M, id="3x-10min"),
        pytest.param(RELATIVE, every(20 * M), 60 * M, id="3x-20min"),
        pytest.param(RELATIVE, every(150), 30 * M, id="fast-tracker-at-least"),
        pytest.param(
            PURELY_RELATIVE,
            (T, T - 10 * M, T - 20 * M, T - 140 * M),
            30 * M,
            id="median-ignores-outlier",
        ),
        pytest.param(PURELY_RELATIVE, (T, T - 10 * M, T - 30 * M), 45 * M, id="even-median"),
        pytest.param(
            PURELY_RELATIVE, (T, T - 10 * M, T - 10 * M, T - 20 * M), 30 * M, id="duplicates"
        ),
        pytest.param(
            SilentFor.model_validate({"times_usual_gap": 1.5}),
            every(10 * M),
            15 * M,
            id="fractional-factor",
        ),
    ],
)
def test_silence_threshold(
    silent_for: float | SilentFor, recent_times: tuple[int, ...], expected: float
) -> None:
    assert silence_threshold(silent_for, recent_times) == expected


WIDENING = help_rule(
    escalate=[
        {"after": "1h", "notify": ["sar", "rescue"]},  # the model sorts steps by `after`
        {"after": "20m", "notify": ["backup"]},
    ]
)


@pytest.mark.parametrize(
    ("escalation", "expected"),
    [
        pytest.param(0, ("rescue",), id="rule-tags"),
        pytest.param(1, ("rescue", "backup"), id="first-step"),
        pytest.param(2, ("rescue", "backup", "sar"), id="both-steps-once-each"),
    ],
)
def test_recipients(escalation: int, expected: tuple[str, ...]) -> None:
    assert recipients(WIDENING, incident(escalation=escalation)) == expected


# --- HELP: opening, late, updates ------------------------------------------------------


def test_first_help_opens() -> None:
    story = Story()
    first = help_(T)

    result = story.step(T + 30, first)

    [d] = result.decisions
    assert (d.reason, d.rule, d.subject, d.severity, d.tags) == (
        OPENED, "help", "HELP", Severity.CRITICAL, RESCUE,
    )  # fmt: skip
    assert (d.late, d.first_notice, d.open_elsewhere) == (False, False, ())
    assert d.message == first
    assert d.first_message == first
    assert d.device.name == "dev1 SPOT"
    assert d.feed_name == "feed1"  # no display name known: the id
    assert d.incident == incident(
        opened_at=T + 30, first_message_id=first.message.id, last_message_id=first.message.id,
        last_notified_at=T + 30,
    )  # fmt: skip
    assert result.incidents == (d.incident,)
    assert result.processed == (first.message.id,)
    assert result.next_due == T + 30 + 15 * M  # the reminder comes before the escalation


@pytest.mark.parametrize(
    ("delay", "late_after", "late"),
    [
        pytest.param(30, 600.0, False, id="at-once"),
        pytest.param(600, 600.0, False, id="exactly-late-after"),
        pytest.param(601, 600.0, True, id="past-late-after"),
        pytest.param(90, 60.0, True, id="configured"),
    ],
)
@pytest.mark.parametrize("type_", ["HELP", "SOS"])
def test_late_flag(type_: str, delay: int, late_after: float, late: bool) -> None:
    story = Story(config=EngineConfig(late_after=late_after))

    [d] = story.step(T + delay, msg(type_, T, received_at=T + delay)).decisions

    assert d.reason is OPENED
    assert d.late is late
    assert d.incident.late is late


@pytest.mark.parametrize(
    ("earlier", "late_type", "battery", "reason"),
    [
        pytest.param([], "HELP", None, OPENED, id="help"),
        pytest.param([help_(T - H)], "HELP", None, UPDATED, id="help-update"),
        pytest.param([help_(T - H)], "HELP-CANCEL", None, RESOLVED, id="help-cancelled"),
        pytest.param([], "OK", "LOW", OPENED, id="low-battery"),
        pytest.param([msg("OK", T - H, battery="LOW")], "OK", "GOOD", RESOLVED, id="battery-ok"),
        pytest.param([track(T - 3 * H)], "TRACK", None, RESOLVED, id="back-in-contact"),
    ],
)
@pytest.mark.parametrize(
    ("delay", "late"), [pytest.param(30, False, id="fresh"), pytest.param(15 * M, True, id="late")]
)
def test_late_marks_every_alert_about_a_message(
    earlier: list[Received],
    late_type: str,
    battery: str | None,
    reason: Reason,
    delay: int,
    late: bool,
) -> None:
    story = Story()
    story.run(*(cycle(r.message.unix_time, r) for r in earlier), cycle(T - 1))
    behind = msg(late_type, T, battery=battery)

    [d] = [d for d in story.step(T + delay, behind).decisions if d.message == behind]

    assert (d.reason, d.late) == (reason, late)


@pytest.mark.parametrize(
    ("updates", "tags"),
    [
        pytest.param("10m", [RESCUE, (), RESCUE, (), RESCUE], id="every-10m"),
        pytest.param("5m", [RESCUE] * 5, id="every-repeat"),
        pytest.param("off", [RESCUE, (), (), (), ()], id="off"),
    ],
)
def test_repeated_help_updates_one_incident(updates: str, tags: list[tuple[str, ...]]) -> None:
    story = Story(rules=ruleset(help_rule(updates=updates)))
    helps = [help_(T + i * 5 * M) for i in range(5)]  # a device in HELP repeats every 5 min

    decisions = story.run(*(cycle(h.message.unix_time + 30, h) for h in helps))

    assert [d.reason for d in decisions] == [OPENED] + [UPDATED] * 4
    assert [d.tags for d in decisions] == tags
    assert [d.message for d in decisions] == helps  # each carries its new position
    inc = story.only("help")
    assert {d.incident.id for d in decisions} == {inc.id}
    assert (inc.state, inc.started_at, inc.opened_at, inc.updated_at) == (
        IncidentState.OPEN, T, T + 30, T + 20 * M,
    )  # fmt: skip
    assert (inc.first_message_id, inc.last_message_id) == (
        helps[0].message.id,
        helps[-1].message.id,
    )
    notified = [i for i, t in enumerate(tags) if t]
    assert inc.updates == len(notified) - 1
    assert inc.last_notified_at == helps[notified[-1]].message.unix_time + 30


def test_repeats_in_one_batch_update_with_the_newest_position() -> None:
    story = Story(rules=ruleset(help_rule(updates="10m")))
    story.step(T + 30, help_(T))
    later = [help_(T + 20 * M), help_(T + 25 * M)]  # one batch, after downtime

    decisions = story.step(T + 26 * M, *later).decisions

    assert [(d.reason, d.tags) for d in decisions] == [(UPDATED, ()), (UPDATED, RESCUE)]
    assert decisions[-1].message == later[-1]


def test_older_help_copy_changes_nothing() -> None:
    story = Story(rules=ruleset(help_rule(updates=0)))  # any real repeat would notify
    newest, older = help_(T + 10 * M), help_(T)
    story.step(T + 10 * M, newest)

    result = story.step(T + 11 * M, older)

    assert result.decisions == ()
    assert result.processed == (older.message.id,)
    assert story.only("help").last_message_id == newest.message.id


# --- HELP-CANCEL -----------------------------------------------------------------------


def test_cancel_resolves_open_help() -> None:
    story = Story()
    first, end = help_(T), cancel(T + 5 * M)
    story.step(T, first)

    result = story.step(T + 5 * M, end)

    [d] = result.decisions
    assert (d.reason, d.rule, d.subject, d.tags) == (RESOLVED, "help", "HELP", RESCUE)
    assert (d.late, d.first_notice) == (False, False)  # its opening was alerted
    assert d.message == end
    assert d.first_message == first
    inc = d.incident
    assert (inc.state, inc.started_at, inc.resolved_at, inc.resolved_by_message_id) == (
        IncidentState.RESOLVED, T, T + 5 * M, end.message.id,
    )  # fmt: skip
    assert result.next_due is None  # nothing left to remind of
    assert story.clock(T + 2 * H) == []


@pytest.mark.parametrize(
    ("rules", "cancel_at", "tags"),
    [
        pytest.param(DEFAULT_RULES, 5 * M, RESCUE, id="before-escalation"),
        pytest.param(DEFAULT_RULES, 21 * M, RESCUE_ALL, id="after-escalation"),
        pytest.param(
            ruleset(
                help_rule(escalate=[{"after": "20m", "notify": ["backup"]}]),
                rule("help-cancel", {"type": ["HELP-CANCEL"]}, resolves="help", notify=["family"]),
            ),
            21 * M,
            ("family", "rescue", "backup"),
            id="resolver-tags-and-recipients",
        ),
        pytest.param(
            ruleset(help_rule(), rule("help-cancel", {"type": ["HELP-CANCEL"]}, resolves="help")),
            5 * M,
            ("rescue",),  # those told of the HELP still hear it is over
            id="quiet-resolver",
        ),
    ],
)
def test_cancel_tags(rules: RuleSet, cancel_at: int, tags: tuple[str, ...]) -> None:
    story = Story(rules=rules)
    story.run(cycle(T, help_(T)), cycle(T + cancel_at - M))  # the clock runs until just before

    [d] = story.step(T + cancel_at, cancel(T + cancel_at)).decisions

    assert (d.reason, d.rule, d.tags) == (RESOLVED, "help", tags)
    assert story.only("help").state is IncidentState.RESOLVED


def test_help_after_cancel_opens_new_incident() -> None:
    story = Story()

    decisions = story.run(
        cycle(T, help_(T)), cycle(T + 5 * M, cancel(T + 5 * M)), cycle(T + H, help_(T + H))
    )

    assert outline(decisions) == [
        (OPENED, "help", RESCUE), (RESOLVED, "help", RESCUE), (OPENED, "help", RESCUE),
    ]  # fmt: skip
    assert [d.incident.id for d in decisions] == [1, 1, 2]
    assert decisions[2].incident.started_at == T + H
    assert [i.state for i in story.incidents.values()] == [
        IncidentState.RESOLVED, IncidentState.OPEN,
    ]  # fmt: skip


def test_cancel_only_closes_its_own_device() -> None:
    story = Story()
    story.step(T, help_(T))

    assert story.step(T + 5 * M, cancel(T + 5 * M, device="dev2")).decisions == ()
    assert story.only("help").state is IncidentState.OPEN


# --- a HELP already cancelled when first seen ------------------------------------------


@pytest.mark.parametrize(
    ("cancel_at", "now", "late"),
    [
        pytest.param(3 * M, 4 * M, False, id="fresh"),
        pytest.param(10 * M, 11 * M, True, id="late"),
    ],
)
def test_help_and_cancel_in_one_batch(cancel_at: int, now: int, late: bool) -> None:
    story = Story()
    first, repeat, end = help_(T), help_(T + cancel_at - M), cancel(T + cancel_at)

    result = story.step(T + now, end, repeat, first)  # batch order does not matter

    [d] = result.decisions
    assert (d.reason, d.rule, d.tags, d.first_notice, d.late) == (
        RESOLVED, "help", RESCUE, True, late,
    )  # fmt: skip
    assert (d.first_message, d.message) == (first, end)  # the HELP's time and the cancel's
    inc = d.incident
    assert (inc.state, inc.started_at, inc.resolved_at, inc.resolved_by_message_id) == (
        IncidentState.RESOLVED, T, T + cancel_at, end.message.id,
    )  # fmt: skip
    assert inc.last_notified_at == T + now
    assert result.incidents == (inc,)
    assert story.clock(T + 2 * H) == []  # nothing to remind of or escalate


def test_help_cancel_help_in_one_batch() -> None:
    story = Story()
    again = help_(T + 10 * M)

    decisions = story.step(T + 11 * M, help_(T), cancel(T + 5 * M), again).decisions

    assert [(d.reason, d.first_notice, d.incident.id) for d in decisions] == [
        (RESOLVED, True, 1), (OPENED, False, 2),
    ]  # fmt: skip
    assert decisions[1].incident.first_message_id == again.message.id


@pytest.mark.parametrize(
    "copy_at",
    [
        pytest.param(T + 5 * M, id="copy-between-help-and-cancel"),
        pytest.param(T - 5 * M, id="copy-older-than-the-help"),
    ],
)
def test_help_arriving_after_its_cancel(copy_at: int) -> None:
    # Paging can bring an older page after a newer one was processed.
    story = Story()
    first, end = help_(T), cancel(T + 10 * M)

    assert story.step(T + 11 * M, end).decisions == ()
    [d] = story.step(T + 12 * M, first).decisions

    assert (d.reason, d.rule, d.tags, d.first_notice, d.late) == (
        RESOLVED, "help", RESCUE, True, True,
    )  # fmt: skip
    assert (d.first_message, d.message) == (first, end)
    inc = d.incident
    assert (inc.state, inc.started_at, inc.resolved_at, inc.resolved_by_message_id) == (
        IncidentState.RESOLVED, T, T + 10 * M, end.message.id,
    )  # fmt: skip
    assert story.step(T + 13 * M, help_(copy_at)).decisions == ()
    assert len(story.incidents) == 1


@pytest.mark.parametrize("cancels", [pytest.param(1, id="one-cancel"), pytest.param(2, id="twice")])
@pytest.mark.parametrize(
    "copy_at",
    [
        pytest.param(T + 5 * M, id="copy-between-help-and-cancel"),
        pytest.param(T - 5 * M, id="copy-older-than-the-help"),
    ],
)
def test_late_copy_of_a_cancelled_help_is_ignored(copy_at: int, cancels: int) -> None:
    story = Story()
    story.run(
        cycle(T, help_(T)),
        *(cycle(T + (10 + i) * M, cancel(T + (10 + i) * M)) for i in range(cancels)),
    )

    assert story.step(T + 20 * M, help_(copy_at)).decisions == ()
    assert len(story.incidents) == 1


# --- reminders and escalation ----------------------------------------------------------

TWO_STEPS = [{"after": "20m", "notify": ["backup"]}, {"after": "1h", "notify": ["sar"]}]


@pytest.mark.parametrize(
    ("help_rule_", "minutes", "expected"),
    [
        pytest.param(
            help_rule(repeat="10m"),
            [5, 9, 10, 15, 19, 20, 30],
            [(REMINDED, RESCUE, 10), (REMINDED, RESCUE, 20), (REMINDED, RESCUE, 30)],
            id="every-repeat",
        ),
        pytest.param(help_rule(repeat="off"), [15, 60, 600], [], id="repeat-off"),
        pytest.param(
            help_rule(repeat="15m", escalate=TWO_STEPS[:1]),
            [15, 20, 30, 35, 50],
            [
                (REMINDED, RESCUE, 15),
                (ESCALATED, ("backup",), 15),  # the new circle only; the reminder pace holds
                (REMINDED, ("rescue", "backup"), 30),
                (REMINDED, ("rescue", "backup"), 50),
            ],
            id="escalation-widens-reminders",
        ),
        pytest.param(
            help_rule(escalate=TWO_STEPS),
            [19, 20, 59, 60, 600],
            [(ESCALATED, ("backup",), 0), (ESCALATED, ("sar",), 0)],
            id="two-steps",
        ),
        pytest.param(
            help_rule(escalate=TWO_STEPS),
            [90],
            [(ESCALATED, ("backup",), 0), (ESCALATED, ("sar",), 0)],
            id="one-late-cycle-takes-both-steps",
        ),
    ],
)
def test_reminders_and_escalation(
    help_rule_: Rule, minutes: list[int], expected: list[tuple[Reason, tuple[str, ...], int]]
) -> None:
    story = Story(rules=ruleset(help_rule_))
    story.step(T, help_(T))

    decisions = story.clock(*(T + m * M for m in minutes))

    assert [(d.reason, d.tags, (d.incident.last_notified_at or 0) - T) for d in decisions] == [
        (reason, tags, m * M) for reason, tags, m in expected
    ]
    reminders = [d.incident.reminders for d in decisions if d.reason is REMINDED]
    assert reminders == list(range(1, len(reminders) + 1))
    steps = [d.incident.escalation for d in decisions if d.reason is ESCALATED]
    assert steps == list(range(1, len(steps) + 1))


@pytest.mark.parametrize(
    ("ack_at", "before", "cancel_tags"),
    [
        pytest.param(0, [], ("rescue",), id="at-once"),
        pytest.param(
            25 * M,
            [(ESCALATED, "help", ("backup",)), (REMINDED, "help", ("rescue", "backup"))],
            ("rescue", "backup"),
            id="after-first-step",
        ),
    ],
)
def test_acknowledged_incident_is_left_alone(
    ack_at: int,
    before: list[tuple[Reason, str, tuple[str, ...]]],
    cancel_tags: tuple[str, ...],
) -> None:
    story = Story(rules=ruleset(help_rule(repeat="10m", escalate=TWO_STEPS), CANCEL_RULE))
    story.step(T, help_(T))
    assert outline(story.clock(T + ack_at)) == before

    story.acknowledge("help")
    result = story.step(T + 5 * H)

    assert result.decisions == ()
    assert result.next_due is None
    assert story.only("help").state is IncidentState.ACKNOWLEDGED
    [d] = story.step(T + 5 * H, cancel(T + 5 * H)).decisions
    assert (d.reason, d.tags) == (RESOLVED, cancel_tags)  # the acknowledged still hear the end


def test_default_help_episode() -> None:
    """HELP every 5 min on the default rules: updates, escalation, widened circle, cancel."""
    story = Story()
    helps = [help_(T + i * 5 * M) for i in range(7)]

    decisions = story.run(
        *(cycle(h.message.unix_time + 30, h) for h in helps),
        cycle(T + 32 * M, cancel(T + 32 * M)),
    )

    assert [(d.reason, d.tags) for d in decisions if d.tags] == [
        (OPENED, RESCUE),  # T
        (UPDATED, RESCUE),  # T+10m: 10 min since the opening
        (UPDATED, RESCUE),  # T+20m: 10 min since that update ...
        (ESCALATED, ("rescue-backup",)),  # ... and 20 min since the opening
        (UPDATED, RESCUE_ALL),  # T+30m: updates now reach the backup too
        (RESOLVED, RESCUE_ALL),
    ]
    assert sum(1 for d in decisions if not d.tags) == 3  # T+5m, T+15m, T+25m: silent
    inc = story.only("help")
    assert (inc.updates, inc.reminders, inc.escalation) == (3, 0, 1)  # updates kept it fresh


# --- stale track -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "threshold"),
    [
        pytest.param(10 * M, 30 * M, id="3x-10min"),
        pytest.param(20 * M, 60 * M, id="3x-20min"),
        pytest.param(150, 30 * M, id="at-least-30min"),
    ],
)
def test_stale_track_opens_at_threshold(gap: int, threshold: int) -> None:
    story = Story()
    rhythm = tracks(T, 5, gap)
    last = rhythm[-1]

    first = story.step(T + 60, *rhythm)
    assert first.decisions == ()
    assert first.next_due == T + threshold  # the very moment it would open
    assert story.step(T + threshold - 1).decisions == ()

    [d] = story.step(T + threshold).decisions

    assert (d.reason, d.rule, d.subject, d.severity, d.tags, d.late) == (
        OPENED, "stale-track", "Silent", Severity.WARNING, RESCUE, False,
    )  # fmt: skip
    assert d.message == last
    assert (d.incident.started_at, d.incident.opened_at) == (T, T + threshold)  # since last heard
    assert d.incident.first_message_id == last.message.id
    assert story.clock(T + 10 * threshold) == []  # said once: repeat off


@pytest.mark.parametrize(
    ("last_type", "silent"),
    [
        pytest.param("TRACK", True),
        pytest.param("EXTREME-TRACK", True),
        pytest.param("UNLIMITED-TRACK", True),
        pytest.param("NEWMOVEMENT", True),
        pytest.param("STOP", False, id="STOP-ends-tracking"),
        pytest.param("POWER-OFF", False, id="POWER-OFF-ends-tracking"),
        pytest.param("OK", False, id="OK-is-not-tracking"),
    ],
)
def test_only_tracking_devices_go_silent(last_type: str, silent: bool) -> None:
    story = Story()
    story.step(T, track(T - 20 * M), track(T - 10 * M), msg(last_type, T))

    decisions = story.step(T + 5 * H).decisions

    assert outline(decisions) == ([(OPENED, "stale-track", RESCUE)] if silent else [])


def test_stale_track_back_in_contact() -> None:
    story = Story()
    story.step(T, track(T))
    [silent] = story.step(T + 30 * M).decisions
    back = track(T + 50 * M)

    result = story.step(T + 50 * M + 30, back)

    [d] = result.decisions
    assert (d.reason, d.rule, d.tags) == (RESOLVED, "stale-track", RESCUE)
    assert d.message == back
    assert d.incident.id == silent.incident.id
    assert (d.incident.resolved_at, d.incident.resolved_by_message_id) == (
        T + 50 * M, back.message.id,
    )  # fmt: skip
    assert result.next_due == T + 80 * M  # a new silence would open then
    [again] = story.step(T + 80 * M).decisions
    assert (again.reason, again.incident.id, again.incident.started_at) == (OPENED, 2, T + 50 * M)


def test_stop_after_silence_tells_those_who_heard_silent() -> None:
    story = Story()
    story.step(T, track(T))
    story.step(T + 30 * M)

    decisions = story.step(T + 40 * M, msg("STOP", T + 40 * M)).decisions

    # The shipped `stop` rule has `notify: []`, but whoever heard "Silent" hears it is over.
    assert outline(decisions) == [(RESOLVED, "stale-track", ("rescue",))]
    assert story.only("stale-track").state is IncidentState.RESOLVED
    assert story.clock(T + 10 * H) == []


FIXED_SILENCE = ruleset(rule("stale-track", {"silent_for": "45m"}, notify=["rescue"]))


@pytest.mark.parametrize(
    "received_at",
    [
        pytest.param(T, id="received-at-once"),
        pytest.param(T + 40 * M, id="received-40min-late"),
    ],
)
def test_fixed_silence_counts_from_unix_time(received_at: int) -> None:
    story = Story(rules=FIXED_SILENCE)
    rhythm = [*tracks(T - M, 5, M), track(T, received_at=received_at)]  # fast: no effect

    assert story.step(received_at, *rhythm).next_due == T + 45 * M
    assert story.step(T + 45 * M - 1).decisions == ()
    [d] = story.step(T + 45 * M).decisions

    assert (d.reason, d.rule, d.incident.started_at) == (OPENED, "stale-track", T)


# --- unknown types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "opened"),
    [
        pytest.param("SOS", True),
        pytest.param("911", True),
        *(
            pytest.param(t, False)
            for t in ("OK", "CUSTOM", "POI", "STATUS", "TEST", "HELP-CANCEL", "STOP")
        ),
    ],
)
def test_unknown_type(type_: str, opened: bool) -> None:
    decisions = Story().step(T, msg(type_, T)).decisions

    assert [(d.reason, d.rule, d.subject, d.severity, d.tags) for d in decisions] == (
        [(OPENED, "unknown-type", "Unknown message", Severity.CRITICAL, RESCUE)] if opened else []
    )


NAMING_TYPES = ruleset(
    rule("sos", {"type": ["SOS"]}, notify=["info"], severity="info"),
    rule("stale", {"silent_for": "1h", "tracking": ["MOVING"]}, notify=["rescue"]),
    rule("unknown-type", {"type": "unknown"}, notify=["rescue"], severity="critical"),
)


@pytest.mark.parametrize(
    ("type_", "rules_fired"),
    [
        pytest.param("SOS", ["sos"], id="named-by-a-type-rule"),
        pytest.param("MOVING", [], id="named-as-tracking"),
        pytest.param("911", ["unknown-type"], id="still-unknown"),
    ],
)
def test_types_named_by_rules_are_not_unknown(type_: str, rules_fired: list[str]) -> None:
    decisions = Story(rules=NAMING_TYPES).step(T, msg(type_, T)).decisions

    assert [d.rule for d in decisions] == rules_fired


def test_repeated_unknown_type_updates_one_incident() -> None:
    story = Story()

    decisions = story.run(cycle(T, msg("SOS", T)), cycle(T + 5 * M, msg("SOS", T + 5 * M)))

    assert outline(decisions) == [(OPENED, "unknown-type", RESCUE), (UPDATED, "unknown-type", ())]
    assert story.only("unknown-type").updated_at == T + 5 * M


# --- low battery -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batteries", "expected", "incidents"),
    [
        pytest.param(["LOW"], [(OPENED, RESCUE)], 1, id="low-opens"),
        pytest.param(["LOW", "LOW"], [(OPENED, RESCUE), (UPDATED, ())], 1, id="low-again"),
        pytest.param(
            ["LOW", None, "GOOD"],
            [(OPENED, RESCUE), (RESOLVED, RESCUE)],
            1,
            id="good-resolves-absent-ignored",
        ),
        pytest.param(["LOW", None, None], [(OPENED, RESCUE)], 1, id="absent-is-no-news"),
        pytest.param([None, "GOOD"], [], 0, id="good-alone"),
        pytest.param(
            ["LOW", "GOOD", "LOW"],
            [(OPENED, RESCUE), (RESOLVED, RESCUE), (OPENED, RESCUE)],
            2,
            id="low-after-good-opens-anew",
        ),
    ],
)
def test_low_battery(
    batteries: list[str | None], expected: list[tuple[Reason, tuple[str, ...]]], incidents: int
) -> None:
    story = Story()
    times = [T + i * 10 * M for i in range(len(batteries))]

    decisions = story.run(
        *(cycle(t, msg("OK", t, battery=b)) for t, b in zip(times, batteries, strict=True))
    )

    assert [(d.reason, d.tags) for d in decisions] == expected
    assert {(d.rule, d.subject, d.severity) for d in decisions} <= {
        ("low-battery", "Low battery", Severity.INFO)
    }
    assert len(story.incidents) == incidents
    assert story.clock(T + 10 * H) == []  # repeat off: once per incident


# --- first start -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feed_history", "expected"),
    [
        pytest.param([history("HELP", H)], [(OPENED, "help", RESCUE)], id="recent-help"),
        pytest.param(
            [history("HELP", H), history("HELP", 55 * M), history("HELP", 50 * M)],
            [(OPENED, "help", RESCUE), (UPDATED, "help", ()), (UPDATED, "help", ())],
            id="recent-help-repeats-alert-once",
        ),
        pytest.param([history("SOS", H)], [(OPENED, "unknown-type", RESCUE)], id="recent-sos"),
        pytest.param([history("HELP", 7 * H)], [], id="old-help-is-history"),
        pytest.param([history("OK", 10 * M, battery="LOW")], [], id="low-battery-is-history"),
        pytest.param([history("TRACK", 10 * M)], [], id="recent-track"),
        pytest.param([history("TRACK", 7 * H)], [], id="old-track"),
    ],
)
def test_first_start(
    feed_history: list[Received], expected: list[tuple[Reason, str, tuple[str, ...]]]
) -> None:
    result = Story().step(START, *feed_history)

    assert outline(result.decisions) == expected
    assert all(d.late for d in result.decisions)  # sent before the service watched
    assert sorted(result.processed) == sorted(r.message.id for r in feed_history)


def test_first_start_cancelled_help_is_recorded_not_alerted() -> None:
    story = Story()
    first, end = history("HELP", H), history("HELP-CANCEL", 30 * M)

    result = story.step(START, first, end)

    assert result.decisions == ()
    [inc] = result.incidents
    assert (inc.rule, inc.state, inc.started_at, inc.resolved_at, inc.last_notified_at) == (
        "help", IncidentState.RESOLVED, START - H, START - 30 * M, None,
    )  # fmt: skip
    assert story.clock(START + 2 * H) == []
    [d] = story.step(START + 3 * H, help_(START + 3 * H)).decisions  # a new HELP, live
    assert (d.reason, d.late, d.incident.id) == (OPENED, False, 2)


@pytest.mark.parametrize(
    ("ago", "opens_at"),
    [
        pytest.param(10 * M, START + 20 * M, id="heard-10min-ago"),
        pytest.param(2 * H, START, id="heard-2h-ago-already-silent"),
        pytest.param(7 * H, None, id="heard-before-the-lookback"),
    ],
)
def test_first_start_silence(ago: int, opens_at: int | None) -> None:
    story = Story()
    first = story.step(START, history("TRACK", ago))

    decisions = [*first.decisions, *story.clock(START + 20 * M, START + 24 * H)]

    if opens_at is None:
        assert first.next_due is None
        assert decisions == []
    else:
        [d] = decisions
        assert (d.reason, d.rule, d.incident.opened_at) == (OPENED, "stale-track", opens_at)
        assert d.incident.started_at == START - ago


# --- device and feed globs -------------------------------------------------------------

FEEDS = {"f-1": "club-north", "f-2": "solo"}


@pytest.mark.parametrize(
    ("narrowing", "device", "name", "feed", "fires"),
    [
        pytest.param({"device": ["anna*"]}, "0-111", "Anna", "f-1", True, id="name-any-case"),
        pytest.param({"device": ["anna*"]}, "0-222", "Bob", "f-1", False, id="other-name"),
        pytest.param({"device": ["0-1*"]}, "0-111", "Anna", "f-1", True, id="device-id"),
        pytest.param({"feed": ["club-*"]}, "0-111", "Anna", "f-1", True, id="feed-name"),
        pytest.param({"feed": ["club-*"]}, "0-111", "Anna", "f-2", False, id="other-feed"),
        pytest.param({"feed": "f-2"}, "0-111", "Anna", "f-2", True, id="feed-id"),
    ],
)
def test_globs_restrict_rules(
    narrowing: dict[str, Any], device: str, name: str, feed: str, fires: bool
) -> None:
    rules = ruleset(
        rule("help", {"type": ["HELP"], **narrowing}, notify=["rescue"]),
        rule("stale-track", {"silent_for": "45m", **narrowing}, notify=["rescue"]),
    )
    story = Story(rules=rules, feed_names=FEEDS)
    kw: dict[str, Any] = {"device": device, "name": name, "feed": feed}

    decisions = story.run(cycle(T, help_(T, **kw), track(T + M, **kw)), cycle(T + H))

    assert [d.rule for d in decisions] == (["help", "stale-track"] if fires else [])
    assert {d.feed_name for d in decisions} <= {FEEDS[feed]}


# --- processing order ------------------------------------------------------------------


def test_processed_holds_every_message_in_time_order() -> None:
    story = Story()
    batch = [track(T + 2 * M), msg("OK", T), help_(T + M, device="dev2"), msg("POI", T + 3 * M)]

    result = story.step(T + 4 * M, *batch)

    assert result.processed == tuple(r.message.id for r in sorted(batch, key=_order))


def test_decisions_come_in_time_order() -> None:
    story = Story()
    later, earlier = help_(T + 2 * M, device="dev2"), msg("SOS", T, device="dev1")

    decisions = story.step(T + 3 * M, later, earlier, msg("OK", T + M, battery="LOW")).decisions

    assert [(d.rule, d.device.id) for d in decisions] == [
        ("unknown-type", "dev1"), ("low-battery", "dev1"), ("help", "dev2"),
    ]  # fmt: skip
    assert decisions[1].open_elsewhere == ("Unknown message",)


def test_messages_processed_by_time_not_id() -> None:
    # Ids need not follow time: the cancel has the smaller id but comes after the HELP.
    story = Story()
    first, end = help_(T, id_=9_000_002), cancel(T + 2 * M, id_=9_000_001)

    result = story.step(T + 3 * M, end, first)

    assert result.processed == (9_000_002, 9_000_001)
    assert [(d.reason, d.first_notice) for d in result.decisions] == [(RESOLVED, True)]


def test_a_cancel_without_fix_carries_the_newest_known_position() -> None:
    story = Story(rules=ruleset(help_rule(), CANCEL_RULE))
    first, second = help_(T), help_(T + 5 * M)
    story.run(cycle(T + 30, first), cycle(T + 5 * M + 30, second))

    [d] = story.step(T + 9 * M, cancel(T + 8 * M, fix=False)).decisions

    assert d.reason is RESOLVED
    assert d.message is not None
    assert not d.message.message.has_position
    assert d.last_fix == second
