"""Notices about the service itself, raised in one place: logged, rendered and queued in
the outbox for the admin tag (never to the target a notice is about); and the watch on
the state's disk, whose failure is told directly, since the outbox needs that disk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

from alerter.clock import Clock, sleep_or_wake
from alerter.errors import StoreError
from alerter.models import AdminKind, AdminNotice, Outgoing
from alerter.notify import Notifier, Targets
from alerter.render import render_admin
from alerter.store import Store
from alerter.vitals import Vitals

log = logging.getLogger("alerter.admin")


class AdminNotices:
    """Raise a notice: `notices(notice, exclude_target)` (the `RaiseNotice` signature)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        targets: Targets,
        *,
        admin_tag: str,
        zone: ZoneInfo,
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.targets = targets
        self.admin_tag = admin_tag
        self.zone = zone
        self.queued = queued

    def use(self, targets: Targets) -> None:
        """Send later notices to the targets of a reloaded Apprise config."""
        self.targets = targets

    def __call__(self, notice: AdminNotice, exclude_target: str | None = None) -> None:
        """Queue a notice for the admin tag."""
        now = self.clock.now()
        targets = self.targets.for_tags([self.admin_tag], exclude=exclude_target)
        log.warning("admin notice: %s: %s %s", notice.kind, notice.subject, notice.detail)
        if not targets:
            log.warning("no Apprise URL carries the admin tag %r", self.admin_tag)
            return
        rendered = render_admin(notice, now, self.zone)
        chosen = tuple((t.id, t.label, t.short) for t in targets)
        self.store.enqueue([Outgoing(rendered, notice.kind.value, chosen)], now)
        self.queued()


class StateWatch:
    """Says when the state cannot be written: the service is then blind (nothing new can
    be stored or alerted). The outbox itself needs the disk, so the first notice goes to
    the admin targets directly, once; the recovery goes through the outbox as usual."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        notices: AdminNotices,
        notifier: Notifier,
        *,
        every: float,
        vitals: Vitals | None = None,
    ) -> None:
        self.vitals = vitals
        self.store = store
        self.clock = clock
        self.notices = notices
        self.notifier = notifier
        self.every = every
        self.failing_since: float | None = None

    @property
    def writable(self) -> bool:
        """Whether the latest probe could write."""
        return self.failing_since is None

    async def check(self) -> None:
        """Probe once; tell the admins when writing starts failing and when it works again."""
        now = self.clock.now()
        try:
            self.store.probe_write(now)
        except StoreError as exc:
            if self.vitals is not None:
                self.vitals.store_error = str(exc)
            if self.failing_since is None:
                self.failing_since = now
                log.error(  # noqa: TRY400 (the error is the message; no traceback helps)
                    "the state cannot be written: %s; the service is blind", exc
                )
                await self.tell_directly(
                    AdminNotice(AdminKind.STATE_UNWRITABLE, str(self.store.path), str(exc), now)
                )
            return
        if self.vitals is not None:
            self.vitals.store_error = None
        if self.failing_since is not None:
            since, self.failing_since = self.failing_since, None
            log.warning("the state can be written again")
            self.notices(
                AdminNotice(AdminKind.STATE_RECOVERED, str(self.store.path), "", now, since=since),
                None,
            )

    async def tell_directly(self, notice: AdminNotice) -> None:
        """Send a notice to every admin target now, without the outbox."""
        targets = self.notices.targets.for_tags([self.notices.admin_tag])
        rendered = render_admin(notice, self.clock.now(), self.notices.zone)
        for target in targets:
            title, body = ("", rendered.short) if target.short else (rendered.title, rendered.body)
            try:
                result = await self.notifier.send(target, title, body, rendered.severity)
            except Exception:  # a plugin bug must not end the watch
                log.exception("telling %s directly failed", target.label)
                continue
            if not result.ok:
                log.error("telling %s directly failed: %s", target.label, result.error)

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every `every` seconds until `stop`."""
        while not stop.is_set():
            await self.check()
            await sleep_or_wake(self.clock, self.every, stop)
