"""Pure: is the service alive and seeing? One verdict for `/healthz`, the heartbeat, the
systemd watchdog and `alerter status`, so they never disagree.

The tasks report what they did (`Vitals`); `verdict` judges it with `now`:

- the loop is stalled when the processor has not finished a cycle within two poll
  intervals (at least a minute: it cycles at least every 30 s);
- the store is failing when the last probe could not write;
- the outbox is stuck when a notification no target has taken has waited longer than
  `stuck_after` (one failing target among working ones is `Delivery failing`, not this);
- the service is *blind* when every feed is failing or blocked, the store is failing,
  or the outbox is stuck: nobody would hear of a HELP.

Healthy means none of these. Each reason is one short line an admin can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alerter.models import FeedStatus

#: The processor cycles at least this often (process.MAX_IDLE), so a stall is judged
#: over at least twice that.
MIN_STALL = 60.0


@dataclass
class Vitals:
    """What the service's tasks last reported about themselves (mutable, one per run)."""

    started_at: float
    last_cycle: float | None = None  # when the processor last finished a cycle
    store_error: str | None = None  # the state's last write probe failed with this
    feeds: dict[str, FeedStatus] = field(default_factory=dict)  # display name -> status
    oldest_pending: float | None = None  # when the oldest notification nobody took was written

    def cycled(self, at: float) -> None:
        """The processor finished a cycle."""
        self.last_cycle = at


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict: healthy, or the reasons it is not; `blind` when nobody would hear."""

    healthy: bool
    blind: bool
    reasons: tuple[str, ...]

    def summary(self) -> str:
        """One line: `ok`, or the reasons joined."""
        return "ok" if self.healthy else "; ".join(self.reasons)


def verdict(vitals: Vitals, now: float, *, interval: float, stuck_after: float) -> Health:
    """Judge the vitals at `now` (pure)."""
    reasons: list[str] = []
    blind = False
    stall = max(2 * interval, MIN_STALL)
    since = vitals.last_cycle if vitals.last_cycle is not None else vitals.started_at
    if now - since > stall:
        reasons.append(f"the processing loop has not run for {now - since:.0f}s")
    if vitals.store_error is not None:
        reasons.append(f"the state cannot be written: {vitals.store_error}")
        blind = True
    if vitals.oldest_pending is not None and now - vitals.oldest_pending > stuck_after:
        reasons.append(
            f"the outbox is stuck: a notification has waited {now - vitals.oldest_pending:.0f}s"
        )
        blind = True
    failing = feed_trouble(vitals.feeds)
    if vitals.feeds and len(failing) == len(vitals.feeds):
        reasons.append("every feed is failing: " + ", ".join(failing))
        blind = True
    return Health(healthy=not reasons, blind=blind, reasons=tuple(reasons))


def feed_trouble(feeds: Mapping[str, FeedStatus]) -> list[str]:
    """`name (status)` for each feed that is not ok, in name order."""
    return [f"{name} ({status})" for name, status in sorted(feeds.items()) if status != "ok"]
