"""The outbox sender: works off pending deliveries, one target at a time, durably.

Every notification was written (per target) before any send, in the same transaction
as the decision behind it. A delivery is marked sent only after its target accepted
it, so a crash between the two repeats that one message to that one target, never
loses it. A failed target alone is retried with backoff (tenacity's exponential
jitter, capped at minutes) while its incident is open; once the incident is resolved
its older alerts are dropped (the resolution, which is delivered, tells the story).
After repeated failures the admins hear `Delivery failing` once, and `Delivery
recovered` when it works again. Deliveries to one target go out in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from itertools import groupby

from alerter.backoff import delay_for, exponential
from alerter.clock import Clock, sleep_or_wake
from alerter.errors import StoreError
from alerter.models import AdminKind, AdminNotice, Severity
from alerter.notify import Notifier, SendResult, Targets
from alerter.store import Delivery, Store, TargetHealth

log = logging.getLogger("alerter.outbox")

#: Consecutive failures of one target before the admins are told.
FAILING_AFTER_ATTEMPTS = 3
#: Resolutions and admin notices are retried this long; then given up, loudly.
GIVE_UP_AFTER = 24 * 3600.0
RETRY_WAIT = exponential(first=10.0, cap=300.0)

AdminHook = Callable[[AdminNotice, str | None], None]


def obsolete(d: Delivery, now: float) -> str | None:
    """Why a pending delivery should no longer be sent, or None."""
    if d.incident_id is not None and d.incident_state == "resolved" and not d.resolution:
        return "its incident was resolved before it could be delivered"
    if (d.incident_id is None or d.resolution) and now - d.created_at > GIVE_UP_AFTER:
        return f"undeliverable for {GIVE_UP_AFTER / 3600:.0f} h"
    return None


class Sender:
    """Delivers the outbox."""

    def __init__(
        self,
        store: Store,
        targets: Callable[[], Targets],
        notifier: Notifier,
        clock: Clock,
        admin: AdminHook,
    ) -> None:
        self.store = store
        self.targets = targets
        self.notifier = notifier
        self.clock = clock
        self.admin = admin
        self.wake = asyncio.Event()
        self.sending = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver whatever is due, then sleep until the next retry or a wake-up."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.deliver_due()
                next_at = self.store.next_delivery_at()
            except StoreError:
                log.exception("outbox: the state database failed; retrying")
                next_at = self.clock.now() + 5
            wait = 3600.0 if next_at is None else max(0.0, next_at - self.clock.now())
            await sleep_or_wake(self.clock, min(wait, 3600.0), self.wake)

    async def deliver_due(self) -> int:
        """Send every due delivery (targets in parallel, each target in order); count sent."""
        now = self.clock.now()
        # Also those not yet due: an obsolete alert waiting for its retry must not hold
        # back the resolution queued behind it for the same target.
        dropped = self.store.drop_obsolete("its incident was resolved before it was delivered")
        if dropped:
            log.info("outbox: dropped %d alerts of resolved incidents", dropped)
        due = self.store.due_deliveries(now)
        due.sort(key=lambda d: (d.target, d.notification_id))
        by_target = groupby(due, key=lambda d: d.target)
        # Every target's run finishes before this returns or raises: a send still in flight
        # after an error would be sent again by the next pass (a duplicate to that target).
        results = await asyncio.gather(
            *(self._deliver_target(target, list(ds)) for target, ds in by_target),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(r for r in results if isinstance(r, int))

    async def _deliver_target(self, target_id: str, deliveries: list[Delivery]) -> int:
        sent = 0
        for d in deliveries:
            now = self.clock.now()
            why = obsolete(d, now)
            target = self.targets().get(target_id)
            if why is None and target is None:
                why = "its target is no longer in the Apprise config"
            if why is not None:
                log.info("outbox: dropping %r to %s: %s", d.title, d.label, why)
                self.store.drop_delivery(d.id, why)
                continue
            assert target is not None
            if self.store.pending_before(target_id, d.notification_id):
                break  # an older one to this target is waiting for its retry: keep order
            title, body = ("", d.short_text) if d.short else (d.title, d.body)
            self.sending += 1
            try:
                result = await self.notifier.send(target, title, body, Severity(d.severity))
            except Exception as exc:  # a plugin bug must not stop the outbox
                log.exception("outbox: sending to %s raised", d.label)
                result = SendResult(False, type(exc).__name__)
            finally:
                self.sending -= 1
            if result.ok:
                self.store.mark_sent(d.id, self.clock.now())
                log.info("outbox: sent %r to %s", d.title, d.label)
                self._healthy(target_id, d.label)
                sent += 1
            else:
                delay = delay_for(RETRY_WAIT, d.attempts + 1)
                self.store.mark_failed(d.id, result.error, self.clock.now() + delay)
                self._failing(target_id, d.label, result.error)
                break  # later ones to this target wait for this one
        return sent

    def _healthy(self, target_id: str, label: str) -> None:
        h = self.store.target_health(target_id)
        if h is None or (h.failures == 0 and not h.told):
            return
        if h.told:
            log.info("outbox: %s works again", label)
            self.admin(
                AdminNotice(
                    AdminKind.DELIVERY_RECOVERED, label, "Deliveries go through again.",
                    self.clock.now(), since=h.failing_since,
                ),
                target_id,
            )  # fmt: skip
        self.store.set_target_health(TargetHealth(target_id, label, 0, None, told=False))

    def _failing(self, target_id: str, label: str, error: str) -> None:
        now = self.clock.now()
        h = self.store.target_health(target_id) or TargetHealth(target_id, label, 0, None, False)
        failures = h.failures + 1
        since = h.failing_since or now
        told = h.told
        if failures == 1:
            log.warning("outbox: %s failed: %s; retrying with backoff", label, error)
        if failures >= FAILING_AFTER_ATTEMPTS and not told:
            told = True
            log.error("outbox: %s keeps failing (%d attempts): %s", label, failures, error)
            self.admin(
                AdminNotice(AdminKind.DELIVERY_FAILING, label, error, now, since=since), target_id
            )
        self.store.set_target_health(TargetHealth(target_id, label, failures, since, told))
