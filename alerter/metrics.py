"""The service's Prometheus metrics, on one registry the service owns (`REGISTRY`).

Counters are incremented where things happen (one line each):

- `watch`: every request to SPOT by feed and outcome, its duration, the messages stored;
- `process`: every committed decision by reason, whether anybody was told, and why not;
- `outbox`: every delivery attempt's outcome by the target's tags, and every drop.

What the state database knows (incidents open, the outbox, each feed's last good answer,
each target's health) and the service's verdict are read when `/metrics` is scraped,
by a `StateCollector` the web server registers with a reader of its own: this module
sits in the base layer and knows neither the store nor the service.

Labels carry display names only: a feed's name (never its id or password), a target's
masked label, tags, reasons. The registry is not prometheus_client's global one, so a
test reads exactly what the service exposes; importing this module twice (a reload)
builds a new registry with it, never a duplicate registration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from alerter.models import EngineEvent, FeedPage

log = logging.getLogger("alerter.metrics")

#: The one registry `/metrics` exposes.
REGISTRY = CollectorRegistry()

#: What one request to SPOT gave: messages, none, or why not (`FeedErrorKind` values).
Outcome = Literal["data", "empty", "unavailable", "blocked", "config"]

SPOT_REQUESTS = Counter(
    "alerter_spot_requests",
    "Requests to SPOT by feed (display name) and outcome: data, empty, unavailable, "
    "blocked, config.",
    ["feed", "outcome"],
    registry=REGISTRY,
)
SPOT_REQUEST_SECONDS = Histogram(
    "alerter_spot_request_duration_seconds",
    "How long a request to SPOT took, from sending to its answer or failure, by feed.",
    ["feed"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
    registry=REGISTRY,
)
MESSAGES_STORED = Counter(
    "alerter_messages_stored",
    "Messages stored for the first time (new SPOT ids), by feed.",
    ["feed"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "alerter_decisions",
    "Decisions committed, by reason, whether anybody was told (notified) and, when "
    "nobody was, why (held_back; 'recorded' when the rule records only).",
    ["reason", "notified", "held_back"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "alerter_notifications",
    "Delivery attempts and drops, by the target's tags (sorted, comma-joined; 'none' "
    "for a target no longer configured) and outcome: sent, failed, dropped.",
    ["tag", "outcome"],
    registry=REGISTRY,
)


# -- the increment points -----------------------------------------------------------------


def outcome_of(page: FeedPage) -> Outcome:
    """`data` when SPOT's answer held messages (usable or skipped), else `empty`."""
    return "data" if page.messages or page.skipped else "empty"


def count_decisions(events: Iterable[EngineEvent]) -> None:
    """Count committed decisions (their history lines say who heard, or why nobody)."""
    for e in events:
        if e.notified:
            held_back = ""
        else:
            held_back = e.held_back.name.lower() if e.held_back is not None else "recorded"
        DECISIONS.labels(e.reason.value, str(e.notified).lower(), held_back).inc()


class Tagged(Protocol):
    """A target, as far as metrics care."""

    @property
    def tags(self) -> frozenset[str]:
        """The Apprise tags it carries."""
        ...


def tags_label(target: Tagged | None) -> str:
    """A target's tags as one label value."""
    if target is None:
        return "none"
    return ",".join(sorted(target.tags)) or "untagged"


def count_notification(
    target: Tagged | None, outcome: Literal["sent", "failed", "dropped"]
) -> None:
    """Count one delivery's attempt (sent, failed) or drop."""
    NOTIFICATIONS.labels(tags_label(target), outcome).inc()


# -- read at scrape time ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateReading:
    """What the state and the service say now (a reader builds it at each scrape)."""

    healthy: bool
    blind: bool
    incidents_open: Mapping[str, int] = field(default_factory=dict)  # rule -> open ones
    outbox_pending: int = 0  # deliveries not yet sent nor dropped
    outbox_oldest_age: float = 0.0  # seconds the oldest pending notification has waited
    feed_silence: Mapping[str, float] = field(default_factory=dict)  # name -> seconds
    targets_failing: Mapping[str, bool] = field(default_factory=dict)  # masked label -> failing


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def state_families(r: StateReading | None) -> list[Metric]:
    """The gauges of one reading (None: the state could not be read; only that is said)."""
    readable = _gauge(
        "alerter_state_readable", "1 when the state database could be read for this scrape."
    )
    readable.add_metric([], 0.0 if r is None else 1.0)
    healthy = _gauge("alerter_healthy", "1 when the service's health verdict is healthy.")
    blind = _gauge("alerter_blind", "1 when nobody would hear of a HELP (the verdict's blind).")
    incidents = _gauge("alerter_incidents_open", "Incidents not yet resolved, by rule.", ["rule"])
    pending = _gauge("alerter_outbox_pending", "Deliveries waiting in the outbox.")
    oldest = _gauge(
        "alerter_outbox_oldest_pending_age_seconds",
        "How long the oldest notification still waiting has waited (0: none waits).",
    )
    silence = _gauge(
        "alerter_feed_last_success_age_seconds",
        "Seconds since each feed's last good answer from SPOT (since it was first watched, "
        "when it never answered), by feed.",
        ["feed"],
    )
    failing = _gauge(
        "alerter_target_failing",
        "1 while a target's latest delivery attempts failed, by masked target label.",
        ["target"],
    )
    if r is None:
        return [readable]
    healthy.add_metric([], float(r.healthy))
    blind.add_metric([], float(r.blind))
    for rule, n in sorted(r.incidents_open.items()):
        incidents.add_metric([rule], float(n))
    pending.add_metric([], float(r.outbox_pending))
    oldest.add_metric([], max(0.0, r.outbox_oldest_age))
    for name, age in sorted(r.feed_silence.items()):
        silence.add_metric([name], max(0.0, age))
    for label, bad in sorted(r.targets_failing.items()):
        failing.add_metric([label], float(bad))
    return [readable, healthy, blind, incidents, pending, oldest, silence, failing]


class StateCollector:
    """Gauges read at scrape time through `read` (which may fail: the counters still go)."""

    def __init__(self, read: Callable[[], StateReading]) -> None:
        self.read = read

    def describe(self) -> Iterator[Metric]:
        """The families it yields (so a second collector on one registry is refused)."""
        yield from state_families(StateReading(healthy=True, blind=False))

    def collect(self) -> Iterator[Metric]:
        """The gauges now."""
        try:
            reading: StateReading | None = self.read()
        except Exception:  # a scrape must answer: say the state is unreadable instead
            log.exception("metrics: cannot read the state")
            reading = None
        yield from state_families(reading)
