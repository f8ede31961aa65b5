"""Notices about the service itself, raised in one place: logged, rendered and queued in
the outbox for the admin tag (never to the target a notice is about)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

from alerter.clock import Clock
from alerter.models import AdminNotice, Outgoing
from alerter.notify import Targets
from alerter.render import render_admin
from alerter.store import Store

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
