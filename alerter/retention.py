"""Retention: a task that forgets stored messages older than `ALERTER_RETENTION`.

Off by default (the service keeps everything: SPOT forgets after 7 days, this does not).
What a prune keeps whatever its age, and what goes with the messages, is `Store.prune`'s
docstring. The retention is never shorter than `floor`: SPOT's 7 days plus the
first-start look-back plus a day. A message SPOT still serves would otherwise come back
at the next catch-up as news (and an old HELP be alerted again), and the processor
reads resolved incidents, with their messages, that far back.
"""

from __future__ import annotations

import asyncio
import logging

from alerter.clock import Clock, sleep_or_wake
from alerter.durations import format_duration
from alerter.errors import StoreError
from alerter.models import SPOT_KEEPS
from alerter.store import Store

log = logging.getLogger("alerter.retention")

#: Slack beyond what SPOT and the processor can still ask for.
MARGIN = 86400.0
#: How often a prune runs.
EVERY = 3600.0


class Pruner:
    """Prunes the store at start, then every `every` seconds, until stopped.

    With `retention` None it does nothing, and its `run` still lasts until `stop` (the
    service ends when one of its tasks does)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        retention: float | None,
        every: float = EVERY,
        *,
        lookback: float = 0.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention
        self.every = every
        self.floor = SPOT_KEEPS + lookback + MARGIN

    @property
    def keep(self) -> float | None:
        """How long messages are kept: the retention, at least `floor`; None: for ever."""
        return None if self.retention is None else max(self.retention, self.floor)

    def prune(self) -> int:
        """One prune now; how many messages went (0 when retention is off)."""
        keep = self.keep
        if keep is None:
            return 0
        pruned = self.store.prune(self.clock.now() - keep)
        if pruned:
            log.info("retention: forgot %d messages older than %s", pruned, format_duration(keep))
        return pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every `every` seconds until `stop`; a failed prune is logged and retried."""
        if self.retention is None:
            await stop.wait()
            return
        if self.retention < self.floor:
            log.warning(
                "retention %s is shorter than SPOT keeps messages plus the first-start "
                "look-back and a day; keeping %s",
                format_duration(self.retention),
                format_duration(self.floor),
            )
        while not stop.is_set():
            try:
                self.prune()
            except StoreError as exc:
                # A full or read-only disk: the state watch tells the admins; try later.
                log.error("retention: prune failed: %s", exc)  # noqa: TRY400
            except Exception:  # a bug here must never stop the service
                log.exception("retention: prune failed")
            await sleep_or_wake(self.clock, self.every, stop)
