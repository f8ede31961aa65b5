"""The outbox sender: works off pending deliveries, one target at a time, durably.

Every notification was written (per target) before any send, in the same transaction
as the decision behind it. Each pass runs these stages, each a small function:

    choose     every pending delivery, oldest notification first, grouped by target
    may it go  `why_not`: obsolete (its incident was resolved; undeliverable for a day)
               or its target left the Apprise config -> dropped, with the reason;
               `blocks`: the ordering rule -> an earlier one still waiting holds it back
    send       one target at a time, in order; targets in parallel; once a target
               accepts anything, what waited for its retry is due at once
    record     sent only after the target accepted it (a crash in between repeats that
               one message to that one target, never loses it); a failure is retried
               with backoff (tenacity's exponential jitter, capped at minutes)
    health     `track_health`: after repeated failures the admins hear `Delivery failing`
               once, and `Delivery recovered` when it works again
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from alerter import metrics
from alerter.backoff import delay_for, exponential
from alerter.clock import Clock, sleep_or_wake
from alerter.errors import StoreError
from alerter.models import (
    AdminKind,
    AdminNotice,
    Delivery,
    IncidentState,
    RaiseNotice,
    TargetHealth,
)
from alerter.notify import Notifier, SendResult, Target, Targets
from alerter.store import Store

log = logging.getLogger("alerter.outbox")

#: Consecutive failures of one target before the admins are told.
FAILING_AFTER_ATTEMPTS = 3
#: Resolutions and admin notices are retried this long; then given up, loudly.
GIVE_UP_AFTER = 24 * 3600.0
#: A failed delivery is retried quickly at first, then at most a minute apart.
RETRY_WAIT = exponential(first=10.0, cap=60.0)
#: The longest the sender sleeps with nothing due: a notification queued by another
#: process (`alerter ack` on the VPS) goes out within this.
IDLE = 15.0


# -- may it go --------------------------------------------------------------------------


def obsolete(d: Delivery, now: float) -> str | None:
    """Why a pending delivery should no longer be sent, or None."""
    if (
        d.incident_id is not None
        and d.incident_state is IncidentState.RESOLVED
        and not d.resolution
    ):
        return "its incident was resolved before it could be delivered"
    if (d.incident_id is None or d.resolution) and now - d.created_at > GIVE_UP_AFTER:
        return f"undeliverable for {GIVE_UP_AFTER / 3600:.0f} h"
    return None


def why_not(d: Delivery, now: float, targets: Targets) -> str | None:
    """Why a pending delivery is dropped rather than sent (due or not), or None."""
    why = obsolete(d, now)
    if why is None and targets.get(d.target) is None:
        why = "its target is no longer in the Apprise config"
    return why


def blocks(waiting: Delivery, later: Delivery) -> bool:
    """Whether `waiting` (to the same target, not yet sent) holds `later` back.

    The ordering rule, in this one place: order is kept within one incident only (its
    HELP before its update, reminder or cancel), never across incidents, so one message
    a target refuses cannot hold back the next HELP of another device. Admin notices
    belong to no incident and wait for nothing.
    """
    return (
        waiting.incident_id is not None
        and waiting.incident_id == later.incident_id
        and waiting.notification_id < later.notification_id
    )


def next_due(pending: Sequence[Delivery]) -> float | None:
    """When the sender next has something it may send: the earliest retry among the
    deliveries no earlier one holds back (one held back waits for its blocker, so its own
    past due time must not make the sender spin)."""
    ordered = sorted(pending, key=lambda d: (d.target, d.notification_id))
    times: list[float] = []
    for _, queue in groupby(ordered, key=lambda d: d.target):
        waiting: list[Delivery] = []
        for d in queue:
            if not any(blocks(w, d) for w in waiting):
                times.append(d.next_attempt)
            waiting.append(d)
    return min(times, default=None)


# -- health -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A target's record after one attempt, and the notice the admins are owed, if any."""

    health: TargetHealth | None  # None: nothing to store
    notice: AdminNotice | None


def track_health(
    previous: TargetHealth | None, target: str, label: str, error: str | None, now: float
) -> HealthChange:
    """The target's record after an attempt that succeeded (`error` None) or failed."""
    if error is None:
        if previous is None or (previous.failures == 0 and not previous.told):
            return HealthChange(None, None)
        notice = (
            AdminNotice(
                AdminKind.DELIVERY_RECOVERED, label, "Deliveries go through again.", now,
                since=previous.failing_since,
            )
            if previous.told
            else None
        )  # fmt: skip
        return HealthChange(TargetHealth(target, label, 0, None, told=False), notice)
    before = previous or TargetHealth(target, label, 0, None, told=False)
    failures = before.failures + 1
    since = before.failing_since or now
    notice = None
    if failures >= FAILING_AFTER_ATTEMPTS and not before.told:
        notice = AdminNotice(AdminKind.DELIVERY_FAILING, label, error, now, since=since)
    told = before.told or notice is not None
    return HealthChange(TargetHealth(target, label, failures, since, told), notice)


# -- the sender -------------------------------------------------------------------------


class Sender:
    """Delivers the outbox."""

    def __init__(
        self,
        store: Store,
        targets: Targets,
        notifier: Notifier,
        clock: Clock,
        admin: RaiseNotice,
    ) -> None:
        self.store = store
        self.targets = targets
        self.notifier = notifier
        self.clock = clock
        self.admin = admin
        self.wake = asyncio.Event()

    def use(self, targets: Targets) -> None:
        """Deliver to the targets of a reloaded Apprise config from the next pass on."""
        self.targets = targets
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver whatever is due, then sleep until the next retry or a wake-up."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.deliver_due()
                next_at = next_due(self.store.pending_deliveries())
            except StoreError:
                log.exception("outbox: the state database failed; retrying")
                next_at = self.clock.now() + 5
            wait = IDLE if next_at is None else max(0.0, next_at - self.clock.now())
            await sleep_or_wake(self.clock, min(wait, IDLE), self.wake)

    async def deliver_due(self) -> int:
        """Send every due delivery (targets in parallel, each target in order); count sent."""
        now = self.clock.now()
        queues = self.choose(now)
        # Every target's run finishes before this returns or raises: a send still in flight
        # after an error would be sent again by the next pass (a duplicate to that target).
        results = await asyncio.gather(
            *(self._deliver_target(target, queue, now) for target, queue in queues),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(r for r in results if isinstance(r, int))

    def choose(self, now: float) -> list[tuple[Target, list[Delivery]]]:
        """Every pending delivery that may still go, by target, oldest first.

        Those not yet due count too: an obsolete alert waiting for its retry must not
        hold back the resolution queued behind it for the same target.
        """
        keep: list[Delivery] = []
        for d in self.store.pending_deliveries():
            why = why_not(d, now, self.targets)
            if why is None:
                keep.append(d)
            else:
                log.info("outbox: dropping %r to %s: %s", d.title, d.label, why)
                self.store.drop_delivery(d.id, why)
                metrics.count_notification(self.targets.get(d.target), "dropped")
        keep.sort(key=lambda d: (d.target, d.notification_id))
        queues: list[tuple[Target, list[Delivery]]] = []
        for target_id, ds in groupby(keep, key=lambda d: d.target):
            target = self.targets.get(target_id)
            assert target is not None  # why_not dropped the others
            queues.append((target, list(ds)))
        return queues

    async def _deliver_target(self, target: Target, queue: Sequence[Delivery], now: float) -> int:
        sent: set[int] = set()
        tried: set[int] = set()  # each delivery is attempted at most once a pass
        for _ in range(2):  # again once the target accepted something: what waited is due
            accepted_before = bool(sent)
            waiting: list[Delivery] = []
            for d in queue:
                if d.id in sent:
                    continue
                due = bool(sent) or d.next_attempt <= now
                if d.id in tried or not due or any(blocks(w, d) for w in waiting):
                    waiting.append(d)
                    continue
                tried.add(d.id)
                result = await self.send(target, d)
                self.record(d, result)
                if result.ok:
                    sent.add(d.id)
                else:
                    waiting.append(d)
            if accepted_before or not sent:
                break
        return len(sent)

    async def send(self, target: Target, d: Delivery) -> SendResult:
        """One delivery to its target; a plugin's exception is a failed send."""
        title, body = ("", d.short_text) if d.short else (d.title, d.body)
        try:
            return await self.notifier.send(target, title, body, d.severity)
        except Exception as exc:  # a plugin bug must not stop the outbox
            log.exception("outbox: sending to %s raised", d.label)
            return SendResult(False, type(exc).__name__)

    def record(self, d: Delivery, result: SendResult) -> None:
        """Record the attempt (sent only now) and the target's health."""
        now = self.clock.now()
        metrics.count_notification(self.targets.get(d.target), "sent" if result.ok else "failed")
        if result.ok:
            self.store.mark_sent(d.id, now)
            log.info("outbox: sent %r to %s", d.title, d.label)
        else:
            delay = delay_for(RETRY_WAIT, d.attempts + 1)
            self.store.mark_failed(d.id, result.error, now + delay)
        error = None if result.ok else result.error
        change = track_health(self.store.target_health(d.target), d.target, d.label, error, now)
        if change.health is None:
            return
        h = change.health
        if error is not None and h.failures == 1:
            log.warning("outbox: %s failed: %s; retrying with backoff", d.label, error)
        if change.notice is not None:
            if error is None:
                log.info("outbox: %s works again", d.label)
            else:
                log.error("outbox: %s keeps failing (%d attempts): %s", d.label, h.failures, error)
            self.admin(change.notice, d.target)
        self.store.set_target_health(h)
