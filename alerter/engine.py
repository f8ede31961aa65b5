"""The rule engine: pure. Messages, incidents, devices and `now` in; decisions out.

Nothing here reads a clock, a file or the network; `evaluate` is handed everything.

Per message (in unixTime order), per rule:
- an event rule (`type: [...]` or `type: unknown`) opens an incident for the device, or
  updates the open one (a repeated HELP moves the position; it does not page anyone as a
  new emergency; at most one "update" notification per `updates`);
- a resolver rule (`resolves: X`) closes the device's open X incident and says so;
- a battery rule opens on LOW and resolves itself on GOOD.
Then per device, silence rules open when a tracking device has been quiet too long and
resolve themselves when it is heard again. Then per open incident, the clock: escalation
steps (`after` counted from the opening) and reminders (`repeat` after the incident's
previous notification), neither once acknowledged (`acknowledge`: someone took it; everyone
it reached hears who). A resolution of an acknowledged incident still reaches everyone
who heard of it; a new HELP after its cancel opens a new incident.

A HELP already cancelled by a later message (seen in the same batch, or earlier because
paging brought an older page late) is reported once, as cancelled, with both times.
At first start, messages already in the feed are history, except an uncancelled
critical event younger than the look-back, which is alerted as late.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from alerter.models import (
    Decision,
    Device,
    HeldBack,
    Incident,
    IncidentState,
    Reason,
    Received,
    Severity,
    newest_fix,
)
from alerter.rhythm import usual_gap
from alerter.rules.schema import Rule, RuleSet, SilentFor, Trigger


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store knows, as the engine's input."""

    devices: Mapping[str, Device]
    incidents: Sequence[Incident]  # open ones, and those resolved recently
    messages: Mapping[int, Received]  # at least the incidents' first and last messages
    feed_names: Mapping[str, str]
    next_incident_id: int


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings the engine needs."""

    lookback: float = 6 * 3600.0  # first start: critical events younger than this alert
    late_after: float = 600.0  # a message processed this long after it was sent is late


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The engine's output."""

    decisions: tuple[Decision, ...]
    incidents: tuple[Incident, ...]  # every incident created or changed, final state
    processed: tuple[int, ...]  # message ids handled
    next_due: float | None  # when the clock next has something to decide


def silence_threshold(silent_for: float | SilentFor, recent_times: tuple[int, ...]) -> float:
    """How long a device may be quiet: fixed, or relative to its usual gap."""
    if not isinstance(silent_for, SilentFor):
        return silent_for
    gap = usual_gap(recent_times)
    if gap is None:
        return silent_for.at_least
    return max(silent_for.at_least, silent_for.times_usual_gap * gap)


def recipients(rule: Rule, incident: Incident) -> tuple[str, ...]:
    """The rule's tags plus every escalation step's reached so far, in order, once each."""
    tags = list(rule.notify)
    for step in rule.escalate[: incident.escalation]:
        tags.extend(step.notify)
    return tuple(dict.fromkeys(tags))


@dataclass
class _Run:
    """One evaluation's working state."""

    rules: RuleSet
    snap: Snapshot
    now: float
    cfg: EngineConfig
    batch: Sequence[Received]
    open_: dict[tuple[str, str], Incident] = field(default_factory=dict)
    resolved: dict[tuple[str, str], list[Incident]] = field(default_factory=dict)
    changed: dict[int, Incident] = field(default_factory=dict)
    messages: dict[int, Received] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.next_id = self.snap.next_incident_id
        self.messages.update(self.snap.messages)
        for inc in self.snap.incidents:
            key = (inc.device_id, inc.rule)
            if inc.is_open:
                self.open_[key] = inc
            else:
                self.resolved.setdefault(key, []).append(inc)

    # -- bookkeeping ---------------------------------------------------------

    def device(self, rec: Received) -> Device:
        m = rec.message
        return self.snap.devices.get(m.messenger_id) or Device(
            id=m.messenger_id, name=m.messenger_name, feed_id=rec.feed_id, last=rec
        )

    def save(self, inc: Incident) -> Incident:
        assert inc.id is not None
        key = (inc.device_id, inc.rule)
        if inc.is_open:
            self.open_[key] = inc
        else:
            self.open_.pop(key, None)
            self.resolved.setdefault(key, []).append(inc)
        self.changed[inc.id] = inc
        return inc

    def new_incident(self, device: Device, rule: Rule, started_at: float, **kw: object) -> Incident:
        inc = Incident(
            id=self.next_id,
            device_id=device.id,
            rule=rule.name,
            state=IncidentState.OPEN,
            started_at=started_at,
            opened_at=self.now,
            updated_at=started_at,
            **kw,  # type: ignore[arg-type]
        )
        self.next_id += 1
        return inc

    def is_late(self, rec: Received) -> bool:
        return rec.initial or self.now - rec.message.unix_time > self.cfg.late_after

    def decide(
        self,
        reason: Reason,
        rule: Rule,
        inc: Incident,
        device: Device,
        rec: Received | None,
        tags: tuple[str, ...],
        *,
        late: bool = False,
        first_notice: bool = False,
        held_back: HeldBack | None = None,
    ) -> None:
        self.save(inc)
        if tags:
            held_back = None
        elif held_back is None:
            held_back = HeldBack.NOBODY_TO_TELL
        others = tuple(
            self.rules.by_name[i.rule].subject if i.rule in self.rules.by_name else i.rule
            for (dev, name), i in self.open_.items()
            if dev == device.id and name != rule.name
        )
        first = self.messages.get(inc.first_message_id) if inc.first_message_id else None
        latest = self.messages.get(inc.last_message_id) if inc.last_message_id else None
        last_fix = newest_fix((rec, latest, first, device.last))
        self.decisions.append(
            Decision(
                reason=reason,
                incident=inc,
                rule=rule.name,
                subject=rule.subject,
                kind=rule.kind,
                severity=rule.severity,
                device=device,
                feed_name=self.snap.feed_names.get(device.feed_id, device.feed_id),
                message=rec if rec is not None else device.last,
                tags=tags,
                late=late,
                first_message=first,
                open_elsewhere=others,
                first_notice=first_notice,
                last_fix=last_fix,
                held_back=held_back,
            )
        )

    # -- messages ------------------------------------------------------------

    def on_message(self, index: int, rec: Received) -> None:
        self.messages[rec.message.id] = rec
        device = self.device(rec)
        m = rec.message
        feed_name = self.snap.feed_names.get(rec.feed_id, rec.feed_id)
        for rule in self.rules.rules:
            if not rule.matches_device(device.id, device.name, rec.feed_id, feed_name):
                continue
            trigger = rule.when.trigger
            if trigger in (Trigger.TYPE, Trigger.UNKNOWN) and self.fires(rule, m.type):
                if rule.opens_incidents:
                    self.on_event(index, rule, rec, device)
                else:
                    self.on_resolver(rule, rec, device)
            elif trigger is Trigger.BATTERY and m.battery is not None:
                self.on_battery(rule, rec, device)

    def fires(self, rule: Rule, message_type: str) -> bool:
        """Whether an event rule fires on this message type."""
        if rule.when.trigger is Trigger.UNKNOWN:
            return self.rules.is_unknown_type(message_type)
        return message_type in rule.when.types

    def on_event(self, index: int, rule: Rule, rec: Received, device: Device) -> None:
        m = rec.message
        if rec.initial and (
            rule.severity is not Severity.CRITICAL
            or m.unix_time < rec.received_at - self.cfg.lookback
        ):
            return  # history from before the service watched this feed
        inc = self.open_.get((device.id, rule.name))
        if inc is not None:
            self.on_repeat(index, rule, inc, rec, device)
            return
        if any(
            r.started_at <= m.unix_time <= (r.resolved_at or r.started_at)
            for r in self.resolved.get((device.id, rule.name), ())
        ):
            return  # a late copy of an incident already dealt with
        cancel = self.cancelled_after(index, rule, rec, device)
        if cancel is not None and any(
            r.resolved_at is not None and m.unix_time <= r.resolved_at <= cancel[0]
            for r in self.resolved.get((device.id, rule.name), ())
        ):
            return  # an older copy of an incident whose cancel was already told
        late = self.is_late(rec)
        inc = self.new_incident(
            device, rule, m.unix_time, first_message_id=m.id, last_message_id=m.id, late=late
        )
        if cancel is not None:
            cancel_time, cancel_rec = cancel
            inc = dataclasses.replace(
                inc,
                state=IncidentState.RESOLVED,
                resolved_at=cancel_time,
                resolved_by_message_id=cancel_rec.message.id if cancel_rec else None,
            )
            if rec.initial:
                self.save(inc)  # cancelled before the service first looked: history
                return
            resolver = self.rules.resolvers_of(rule.name)[0]
            tags = tuple(dict.fromkeys((*rule.notify, *resolver.notify)))
            inc = dataclasses.replace(inc, last_notified_at=self.now if tags else None)
            # The cancel is the message behind a resolution (the HELP is `first_message`).
            self.decide(
                Reason.RESOLVED, rule, inc, device, cancel_rec or rec, tags,
                late=late, first_notice=True,
            )  # fmt: skip
            return
        inc = dataclasses.replace(inc, last_notified_at=self.now)
        self.decide(Reason.OPENED, rule, inc, device, rec, rule.notify, late=late)

    def on_repeat(
        self, index: int, rule: Rule, inc: Incident, rec: Received, device: Device
    ) -> None:
        m = rec.message
        if m.unix_time <= inc.updated_at:
            return  # an older copy: the incident already shows newer news
        held_back = self.update_held_back(index, rule, inc, device)
        inc = dataclasses.replace(inc, updated_at=m.unix_time, last_message_id=m.id)
        late = self.is_late(rec)
        if held_back is not None:
            self.decide(Reason.UPDATED, rule, inc, device, rec, (), late=late, held_back=held_back)
            return
        inc = dataclasses.replace(inc, updates=inc.updates + 1, last_notified_at=self.now)
        self.decide(Reason.UPDATED, rule, inc, device, rec, recipients(rule, inc), late=late)

    def update_held_back(
        self, index: int, rule: Rule, inc: Incident, device: Device
    ) -> HeldBack | None:
        """Why a repeat of an open incident's event sends no update, or None: it does."""
        if rule.updates is None:
            return HeldBack.UPDATES_OFF
        # Several repeats in one batch (after downtime): the newest carries the update.
        if any(
            b.message.messenger_id == device.id and self.fires(rule, b.message.type)
            for b in self.batch[index + 1 :]
        ):
            return HeldBack.NEWER_IN_POLL
        if inc.last_notified_at is None or self.now - inc.last_notified_at < rule.updates:
            return HeldBack.UPDATE_TOO_SOON
        return None

    def cancelled_after(
        self, index: int, rule: Rule, rec: Received, device: Device
    ) -> tuple[float, Received | None] | None:
        """A resolver's message for this device later than `rec`: in this batch, or stored."""
        resolvers = self.rules.resolvers_of(rule.name)
        types = {t for r in resolvers for t in r.when.types}
        if not types:
            return None
        t = rec.message.unix_time
        for later in self.batch[index + 1 :]:
            lm = later.message
            if lm.messenger_id == device.id and lm.type in types and lm.unix_time >= t:
                return float(lm.unix_time), later
        stored = [device.last_by_type.get(ty, 0) for ty in types]
        newest = max(stored, default=0)
        # A stored cancel newer than this message, already processed before this batch.
        if newest >= t and not any(
            b.message.messenger_id == device.id and b.message.unix_time == newest
            for b in self.batch
        ):
            known = (
                r
                for r in (device.last, *self.messages.values())
                if r is not None
                and r.message.messenger_id == device.id
                and r.message.type in types
                and r.message.unix_time == newest
            )
            return float(newest), next(known, None)
        return None

    def on_resolver(self, rule: Rule, rec: Received, device: Device) -> None:
        m = rec.message
        for name in rule.resolves or ():
            target = self.rules.by_name.get(name)
            inc = self.open_.get((device.id, name))
            if target is None or inc is None or m.unix_time < inc.started_at:
                continue
            if m.unix_time < inc.updated_at:
                # Reached us late: the device repeated the event after this cancel, so
                # the emergency goes on (a HELP pressed after a cancel is news).
                continue
            inc = dataclasses.replace(
                inc,
                state=IncidentState.RESOLVED,
                resolved_at=float(m.unix_time),
                resolved_by_message_id=m.id,
            )
            # Whoever heard of the incident hears it is over, whatever the resolver's
            # own `notify` (`stop` resolves a stale-track silently only if none was sent).
            tags = (
                ()
                if rec.initial
                else tuple(dict.fromkeys((*rule.notify, *recipients(target, inc))))
            )
            self.decide(
                Reason.RESOLVED, target, inc, device, rec, tags, late=self.is_late(rec),
                held_back=HeldBack.HISTORY if rec.initial else None,
            )  # fmt: skip

    def on_battery(self, rule: Rule, rec: Received, device: Device) -> None:
        m = rec.message
        inc = self.open_.get((device.id, rule.name))
        late = self.is_late(rec)
        if m.battery == "LOW":
            if inc is not None:
                if m.unix_time > inc.updated_at:
                    inc = dataclasses.replace(inc, updated_at=m.unix_time, last_message_id=m.id)
                    self.decide(
                        Reason.UPDATED, rule, inc, device, rec, (), late=late,
                        held_back=HeldBack.ALREADY_OPEN,
                    )  # fmt: skip
                return
            if rec.initial:
                return
            inc = self.new_incident(
                device, rule, m.unix_time, first_message_id=m.id, last_message_id=m.id,
                last_notified_at=self.now, late=late,
            )  # fmt: skip
            self.decide(Reason.OPENED, rule, inc, device, rec, rule.notify, late=late)
        elif inc is not None and m.unix_time > inc.updated_at:
            inc = dataclasses.replace(
                inc,
                state=IncidentState.RESOLVED,
                resolved_at=float(m.unix_time),
                resolved_by_message_id=m.id,
            )
            tags = () if rec.initial else recipients(rule, inc)
            self.decide(
                Reason.RESOLVED, rule, inc, device, rec, tags, late=late,
                held_back=HeldBack.HISTORY if rec.initial else None,
            )  # fmt: skip

    # -- conditions and the clock -------------------------------------------

    def on_silence(self, rule: Rule, device: Device) -> float | None:
        """Open or resolve the device's silence incident; returns when it next could open."""
        last = device.last
        if last is None:
            return None
        feed_name = self.snap.feed_names.get(device.feed_id, device.feed_id)
        if not rule.matches_device(device.id, device.name, device.feed_id, feed_name):
            return None
        assert rule.when.silent_for is not None
        m = last.message
        inc = self.open_.get((device.id, rule.name))
        if inc is not None:
            if m.unix_time <= inc.started_at:
                return None  # still silent, and already said so
            inc = dataclasses.replace(
                inc,
                state=IncidentState.RESOLVED,
                resolved_at=float(m.unix_time),
                resolved_by_message_id=m.id,
                updated_at=float(m.unix_time),
                last_message_id=m.id,
            )
            self.decide(
                Reason.RESOLVED, rule, inc, device, last, recipients(rule, inc),
                late=self.is_late(last),
            )  # fmt: skip
            # Back in contact: the next silence counts from this message (and sets next_due).
        if m.type not in rule.when.tracking_types:
            return None  # tracking ended on purpose, or never began
        if last.initial and m.unix_time < last.received_at - self.cfg.lookback:
            return None  # only devices heard within the look-back at first start
        threshold = silence_threshold(rule.when.silent_for, device.recent_times)
        if threshold <= 0:
            return None
        due = m.unix_time + threshold
        if self.now < due:
            return due
        if any(r.started_at == m.unix_time for r in self.resolved.get((device.id, rule.name), ())):
            return None  # this very silence was already alerted and closed
        inc = self.new_incident(
            device, rule, float(m.unix_time), first_message_id=m.id, last_message_id=m.id,
            last_notified_at=self.now,
        )  # fmt: skip
        self.decide(Reason.OPENED, rule, inc, device, last, rule.notify)
        return None

    def on_clock(self, inc: Incident) -> float | None:
        """Escalate and remind; returns when this incident next needs the clock."""
        rule = self.rules.by_name.get(inc.rule)
        if rule is None or inc.state is not IncidentState.OPEN:
            return None
        device = self.snap.devices.get(inc.device_id) or Device(inc.device_id, inc.device_id, "")
        last = self.messages.get(inc.last_message_id) if inc.last_message_id else None
        while inc.escalation < len(rule.escalate):
            step = rule.escalate[inc.escalation]
            if self.now < inc.opened_at + step.after:
                break
            # Not a notification of the incident's own circle: its reminders keep their pace.
            inc = dataclasses.replace(inc, escalation=inc.escalation + 1)
            self.decide(Reason.ESCALATED, rule, inc, device, last, step.notify)
        if (
            rule.repeat is not None
            and inc.last_notified_at is not None
            and self.now >= inc.last_notified_at + rule.repeat
        ):
            inc = dataclasses.replace(inc, reminders=inc.reminders + 1, last_notified_at=self.now)
            self.decide(Reason.REMINDED, rule, inc, device, last, recipients(rule, inc))
        dues = []
        if inc.escalation < len(rule.escalate):
            dues.append(inc.opened_at + rule.escalate[inc.escalation].after)
        if rule.repeat is not None and inc.last_notified_at is not None:
            dues.append(inc.last_notified_at + rule.repeat)
        return min(dues, default=None)


def acknowledge(
    rules: RuleSet, snapshot: Snapshot, incident: Incident, by: str, via: str, now: float
) -> Evaluation:
    """Someone took `incident` (open): it becomes acknowledged (no more reminders or
    escalation: `on_clock` leaves it alone), and everyone it reached hears who took it
    (the rule's tags and every escalation step's reached so far). When its rule is gone
    (reloaded away) it is taken all the same, with nobody to tell (no decision)."""
    inc = dataclasses.replace(
        incident,
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_by=by,
        acknowledged_at=now,
        acknowledged_via=via,
    )
    rule = rules.by_name.get(incident.rule)
    if rule is None:
        return Evaluation(decisions=(), incidents=(inc,), processed=(), next_due=None)
    run = _Run(rules=rules, snap=snapshot, now=now, cfg=EngineConfig(), batch=())
    tags = recipients(rule, inc)
    if tags:
        inc = dataclasses.replace(inc, last_notified_at=now)
    device = snapshot.devices.get(inc.device_id) or Device(inc.device_id, inc.device_id, "")
    last = run.messages.get(inc.last_message_id) if inc.last_message_id else None
    run.decide(Reason.ACKNOWLEDGED, rule, inc, device, last, tags)
    return Evaluation(decisions=tuple(run.decisions), incidents=(inc,), processed=(), next_due=None)


def evaluate(
    rules: RuleSet,
    snapshot: Snapshot,
    messages: Sequence[Received],
    now: float,
    config: EngineConfig = EngineConfig(),
) -> Evaluation:
    """Decide what the messages and the passing of time mean. No I/O; `now` is given."""
    batch = sorted(messages, key=lambda r: (r.message.unix_time, r.message.id))
    run = _Run(rules=rules, snap=snapshot, now=now, cfg=config, batch=batch)
    for index, rec in enumerate(batch):
        run.on_message(index, rec)
    dues: list[float] = []
    silence_rules = [r for r in rules.rules if r.when.trigger is Trigger.SILENCE]
    for device in snapshot.devices.values():
        for rule in silence_rules:
            due = run.on_silence(rule, device)
            if due is not None:
                dues.append(due)
    for inc in list(run.open_.values()):
        due = run.on_clock(inc)
        if due is not None:
            dues.append(due)
    return Evaluation(
        decisions=tuple(run.decisions),
        incidents=tuple(run.changed.values()),
        processed=tuple(r.message.id for r in batch),
        next_due=min(dues, default=None),
    )
