"""One processing cycle: pending messages -> engine -> render -> one commit.

The engine runs on the messages the watcher stored and on the clock; its decisions,
the messages' processed marks, the incidents, their history and the outbox rows are
committed in one transaction, so a crash at any point re-evaluates exactly what was not
committed. Each cycle also checks feed health, which may raise an admin notice.

`acknowledge` is the one way an incident is taken (the CLI's `alerter ack` and the web
page both call it): the incident, its history line and one `Acknowledged` notification to
everyone it reached commit together, and only if the incident is still open then.

With `ALERTER_PUBLIC_URL` (and the key, `ack_key`), every alert of an open incident carries
its acknowledgement link, signed for the recipient tag: a decision's notification is
rendered once per tag group, each target in the group of the first of the decision's tags
it carries, so every target still gets it exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from alerter import metrics
from alerter.ack import AckOutcome, AckStatus, ack_url, clean_name
from alerter.clock import Clock, sleep_or_wake
from alerter.config import Config
from alerter.engine import EngineConfig, Evaluation, Snapshot, acknowledge, evaluate
from alerter.errors import AlerterError, StoreError
from alerter.health import feed_health
from alerter.models import (
    SPOT_KEEPS,
    AdminKind,
    AdminNotice,
    Decision,
    EngineEvent,
    FeedState,
    HeldBack,
    IncidentState,
    Outgoing,
    RaiseNotice,
    Reason,
    Received,
    Rendered,
)
from alerter.notify import Target
from alerter.render import render, render_plain
from alerter.rules.schema import Trigger
from alerter.settings import Settings
from alerter.store import Store
from alerter.vitals import Vitals

log = logging.getLogger("alerter.process")

#: The processor looks at the clock at least this often, even with nothing due.
MAX_IDLE = 30.0


class Processor:
    """Turns stored messages and the passing of time into committed decisions."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        store: Store,
        clock: Clock,
        *,
        raise_notice: RaiseNotice = lambda notice, exclude: None,
        queued: Callable[[], None] = lambda: None,
        vitals: Vitals | None = None,
        ack_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.ack_key = ack_key  # signs the links in alerts (`alerter.ack.load_key`)
        self.config = config
        self.store = store
        self.clock = clock
        self.raise_notice = raise_notice
        self.queued = queued
        self.engine_config = EngineConfig(
            lookback=settings.first_start_lookback,
            late_after=max(2 * settings.poll_interval, 600.0),
        )
        self.started_at = clock.now()
        self.vitals = vitals or Vitals(started_at=self.started_at)
        self.changed = asyncio.Event()

    def use(self, config: Config) -> None:
        """Decide with reloaded rules and targets from the next cycle on."""
        self.config = config
        self.changed.set()

    def feed_names(self, states: Mapping[str, FeedState] | None = None) -> dict[str, str]:
        """Every feed's display name."""
        states = self.store.feed_states() if states is None else states
        return self.settings.feed_names({fid: st.name for fid, st in states.items()})

    def evaluate_now(
        self, pending: Sequence[Received] | None = None
    ) -> tuple[Evaluation, list[Outgoing], float]:
        """Run the engine on `pending` (else what the store holds); render what must be
        sent (no writes)."""
        now = self.clock.now()
        if pending is None:
            pending = self.store.pending()
        # Resolved incidents matter only to the devices in this batch (a late copy of an
        # incident already dealt with) and to silence rules (a silence already alerted):
        # loading only those keeps each cycle's work flat however many alerts went out.
        silence = [r.name for r in self.config.rules.rules if r.when.trigger is Trigger.SILENCE]
        incidents = self.store.incidents(
            resolved_since=now - SPOT_KEEPS - self.settings.first_start_lookback,
            devices={r.message.messenger_id for r in pending},
            rules=silence,
        )
        wanted = {i.first_message_id for i in incidents} | {i.last_message_id for i in incidents}
        snapshot = Snapshot(
            devices=self.store.devices(),
            incidents=incidents,
            messages=self.store.messages_by_id(i for i in wanted if i is not None),
            feed_names=self.feed_names(),
            next_incident_id=self.store.next_incident_id(),
        )
        result = evaluate(self.config.rules, snapshot, pending, now, self.engine_config)
        # A decision whose tags no URL carries is recorded as held back (`event`), not
        # written as a notification nobody can receive.
        outgoing = [o for d in result.decisions if d.tags for o in self.outgoing(d, now)]
        return result, outgoing, now

    def outgoing(self, d: Decision, now: float) -> list[Outgoing]:
        """A decision's notifications and the targets its tags select, each target once:
        one notification, or one per tag group when its alerts carry acknowledgement links
        (each target in the group of the first of `d.tags` it carries, with that tag's link).
        Empty when no URL carries the tags."""
        targets = self.config.targets.for_tags(d.tags)
        if not targets:
            log.warning("no Apprise URL carries %s: %s goes nowhere", d.tags, d.reason)
            return []
        public_url, key, incident_id = self.settings.public_url, self.ack_key, d.incident.id
        if (
            public_url is None
            or key is None
            or incident_id is None
            or d.incident.state is not IncidentState.OPEN
        ):
            return [self._outgoing(d, now, targets, None)]
        groups: dict[str, list[Target]] = {}
        for t in targets:
            groups.setdefault(next(tag for tag in d.tags if tag in t.tags), []).append(t)
        return [
            self._outgoing(d, now, groups[tag], ack_url(public_url, key, incident_id, tag))
            for tag in d.tags
            if tag in groups
        ]

    def _outgoing(
        self, d: Decision, now: float, targets: Sequence[Target], link: str | None
    ) -> Outgoing:
        return Outgoing(
            rendered=render_or_plain(d, now, self.settings.zone, link),
            kind=d.reason.value,
            targets=tuple((t.id, t.label, t.short) for t in targets),
            incident_id=d.incident.id,
            resolution=d.reason is Reason.RESOLVED,
        )

    def acknowledge(self, incident_id: int, by: str, via: str) -> AckOutcome:
        """Someone (`by`, a name; cleaned, at most 60 characters) takes an open incident,
        through `via` (`cli`, `web:TAG`): it becomes acknowledged (reminders and escalation
        stop), its history records it, and everyone it reached (the rule's tags and the
        escalation steps reached) gets one `Acknowledged` notification: all in one commit,
        made only if the incident is still open then (another process may take or resolve
        it meanwhile). Already acknowledged: nothing changes, the outcome says who took it
        and when. Resolved or unknown: nothing changes (`NOT_OPEN`).

        Raises ValueError when `by` holds no name.
        """
        name = clean_name(by)
        if name is None:
            raise ValueError("a name is needed to acknowledge an incident")
        how = clean_name(via) or "unknown"
        for _ in range(3):  # a commit refused because the incident changed: look again
            inc = self.store.incident(incident_id)
            if inc is None or inc.state is IncidentState.RESOLVED:
                return AckOutcome(AckStatus.NOT_OPEN, inc)
            if inc.state is IncidentState.ACKNOWLEDGED:
                return AckOutcome(AckStatus.ALREADY, inc)
            now = self.clock.now()
            open_ = self.store.incidents()
            wanted = {i.first_message_id for i in open_} | {i.last_message_id for i in open_}
            snapshot = Snapshot(
                devices=self.store.devices(),
                incidents=open_,
                messages=self.store.messages_by_id(i for i in wanted if i is not None),
                feed_names=self.feed_names(),
                next_incident_id=self.store.next_incident_id(),
            )
            result = acknowledge(self.config.rules, snapshot, inc, name, how, now)
            [taken] = result.incidents
            outgoing = [o for d in result.decisions if d.tags for o in self.outgoing(d, now)]
            events = [
                dataclasses.replace(self.event(d, now), message_id=None) for d in result.decisions
            ] or [
                EngineEvent(incident_id, now, Reason.ACKNOWLEDGED, None, notified=False,
                            held_back=HeldBack.NOBODY_TO_TELL)
            ]  # fmt: skip
            if self.store.commit_evaluation(
                processed=(), incidents=(), events=events, outgoing=outgoing, at=now,
                acknowledge=taken,
            ):  # fmt: skip
                metrics.count_decisions(events)
                count = sum(len(o.targets) for o in outgoing)
                log.info(
                    "incident #%d (%s for %s) acknowledged by %r via %s; %d targets told",
                    incident_id, inc.rule, inc.device_id, name, how, count,
                )  # fmt: skip
                if outgoing:
                    self.queued()
                return AckOutcome(AckStatus.ACKNOWLEDGED, taken, notified=count)
        return AckOutcome(AckStatus.NOT_OPEN, self.store.incident(incident_id))

    def process(self) -> Evaluation:
        """One engine cycle, committed atomically (`next_due`: when the clock next matters).

        When the batch cannot be decided, its messages are decided one at a time: the one
        that fails is set aside with its reason (the admins are told) and the rest go on.
        """
        pending = self.store.pending()
        try:
            return self._decide(pending)
        except StoreError:
            raise
        except Exception:
            if not pending:
                raise  # the clock's part failed: nothing to set aside; retried next cycle
            log.exception("deciding %d messages failed; deciding them one at a time", len(pending))
        result: Evaluation | None = None
        for rec in pending:
            try:
                result = self._decide([rec])
            except StoreError:
                raise
            except Exception as exc:
                self.set_aside(rec, exc)
        return result or Evaluation((), (), (), None)

    def set_aside(self, rec: Received, exc: Exception) -> None:
        """Take a message that cannot be decided out of the way, and tell the admins."""
        m = rec.message
        why = f"{type(exc).__name__}: {exc}"[:300]
        log.error("message %s (%s from %s) set aside: %s", m.id, m.type, m.messenger_id, why)
        self.store.set_aside(m.id, why, self.clock.now())
        device = f"{m.messenger_name} ({m.messenger_id})"
        detail = f"{m.type} message id {m.id} sent at unixTime {m.unix_time}: {why}"
        self.raise_notice(
            AdminNotice(AdminKind.MESSAGE_SET_ASIDE, device, detail, self.clock.now()), None
        )

    def _decide(self, pending: Sequence[Received]) -> Evaluation:
        result, outgoing, now = self.evaluate_now(pending)
        if not result.decisions and not result.processed:
            return result
        events = [self.event(d, now) for d in result.decisions]
        self.store.commit_evaluation(
            processed=result.processed,
            incidents=result.incidents,
            events=events,
            outgoing=outgoing,
            at=now,
        )
        metrics.count_decisions(events)
        for d in result.decisions:
            log.info("%s", describe_decision(d))
        if outgoing:
            self.queued()
        return result

    def event(self, d: Decision, now: float) -> EngineEvent:
        """The line a decision adds to its incident's history: who heard, or why nobody."""
        held_back = d.held_back
        if d.tags and not self.config.targets.for_tags(d.tags):
            held_back = HeldBack.NO_TARGET
        return EngineEvent(
            incident_id=d.incident.id or 0,
            at=now,
            reason=d.reason,
            message_id=d.message.message.id if d.message else None,
            notified=held_back is None,
            held_back=held_back,
        )

    def check_feeds(self) -> None:
        """Tell the admins when a feed starts failing or is blocked, and when it recovers."""
        now = self.clock.now()
        states = self.store.feed_states()
        names = self.feed_names(states)
        healths = feed_health(
            states,
            names,
            (f.id for f in self.settings.feeds),
            now,
            self.started_at,
            self.settings.feed_failing_after,
        )
        self.vitals.feeds = {names.get(h.feed_id, h.feed_id): h.status for h in healths}
        for h in healths:
            if h.notice is not None:
                self.raise_notice(h.notice, None)
                self.store.set_feed_told(h.feed_id, h.status)

    async def run(self, stop: asyncio.Event) -> None:
        """Process whenever something changed or the clock says so, until `stop`."""
        while not stop.is_set():
            self.changed.clear()
            try:
                next_due = self.process().next_due
                self.check_feeds()
                self.vitals.oldest_pending = self.store.oldest_unheard()
                self.vitals.cycled(self.clock.now())
            except AlerterError:
                log.exception("processing failed; retrying")
                next_due = None
            except Exception:
                # Catch once per cycle, with context; never swallow cancellation.
                log.exception("unexpected error while processing; retrying")
                next_due = None
            now = self.clock.now()
            wait = MAX_IDLE if next_due is None else min(MAX_IDLE, max(0.0, next_due - now))
            await sleep_or_wake(self.clock, wait, self.changed)


def render_or_plain(
    d: Decision, now: float, zone: ZoneInfo, ack_url: str | None = None
) -> Rendered:
    """`render`, or the decision's plainest facts when a value defeats it: an alert that
    says less is better than one held back."""
    try:
        return render(d, now, zone, ack_url)
    except Exception as exc:
        log.exception("cannot render %s of #%s; sending it plain", d.reason, d.incident.id)
        return render_plain(d, type(exc).__name__)


def describe_decision(d: Decision) -> str:
    """One log line per decision."""
    m = d.message.message if d.message else None
    what = f"{m.type} id={m.id} at {m.unix_time}" if m else "clock"
    to = ",".join(d.tags) if d.tags else f"nobody ({d.held_back or 'recorded'})"
    late = " late" if d.late else ""
    return (
        f"decision: {d.reason.value}{late} {d.rule} #{d.incident.id} for {d.device.name} "
        f"({d.device.id}, {d.feed_name}) by {what} -> {to}"
    )
