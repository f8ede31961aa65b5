"""The values that flow through the pipeline. Frozen; no I/O here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum

#: SPOT's "no position" marker for latitude and longitude.
NO_POSITION = -99999.0

#: Types SPOT documents, and those seen in real feeds beyond them (SPOT_API.md).
#: A type outside this set (a literal SOS, 911, ...) is "unknown" and worth an alert.
KNOWN_TYPES = frozenset(
    {
        "OK", "TRACK", "EXTREME-TRACK", "UNLIMITED-TRACK", "NEWMOVEMENT", "HELP",
        "HELP-CANCEL", "CUSTOM", "POI", "STOP", "STATUS", "POWER-OFF", "TEST",
    }
)  # fmt: skip

#: SPOT returns at most this many messages a page.
PAGE_SIZE = 50

#: How many of a device's latest message times are kept to judge its rhythm.
RHYTHM_WINDOW = 20


@dataclass(frozen=True, slots=True)
class Message:
    """One SPOT message as the feed gave it. `type` stays a string: SPOT adds types."""

    id: int
    messenger_id: str
    messenger_name: str
    unix_time: int
    type: str
    latitude: float | None = None  # None: no GPS fix
    longitude: float | None = None
    altitude: int | None = None
    model_id: str | None = None
    battery: str | None = None  # GOOD, LOW, or absent
    content: str | None = None
    date_time: str | None = None  # as sent, e.g. 2013-04-02T06:28:03-0700
    extra: tuple[tuple[str, str], ...] = ()  # every other field, as text

    @property
    def has_position(self) -> bool:
        """True when the message carries a GPS fix."""
        return self.latitude is not None and self.longitude is not None


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One parsed response: the usable messages and why the others were skipped."""

    messages: tuple[Message, ...] = ()
    skipped: tuple[str, ...] = ()
    feed_id: str | None = None
    feed_name: str | None = None
    total_count: int | None = None


def usual_gap(recent_times: tuple[int, ...]) -> float | None:
    """The device's usual gap between messages: the median of its recent gaps, if known."""
    times = sorted(set(recent_times))
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    if len(gaps) < 2:
        return None
    mid = len(gaps) // 2
    return float(gaps[mid]) if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2


@dataclass(frozen=True, slots=True)
class Received:
    """A stored message with where and when the service got it."""

    message: Message
    feed_id: str
    received_at: float
    initial: bool = False  # stored while the feed's history was first read


@dataclass(frozen=True, slots=True)
class Device:
    """What the service knows of one messenger (device)."""

    id: str
    name: str
    feed_id: str
    last: Received | None = None
    recent_times: tuple[int, ...] = ()  # newest first, at most RHYTHM_WINDOW
    last_by_type: dict[str, int] = field(default_factory=dict)  # newest unixTime per type


class IncidentState(StrEnum):
    """Where an incident stands."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Incident:
    """One rule firing for one device, from open to resolved."""

    device_id: str
    rule: str
    state: IncidentState
    started_at: float  # time of the first message behind it (or when silence began)
    opened_at: float  # when the service opened it
    updated_at: float  # time of the latest message behind it
    first_message_id: int | None = None
    last_message_id: int | None = None
    last_notified_at: float | None = None
    reminders: int = 0
    updates: int = 0
    escalation: int = 0  # escalation steps taken
    late: bool = False
    resolved_at: float | None = None
    resolved_by_message_id: int | None = None
    id: int | None = None  # None until stored

    @property
    def is_open(self) -> bool:
        """Open or acknowledged: not yet resolved."""
        return self.state is not IncidentState.RESOLVED


class Reason(StrEnum):
    """Why a decision was made (Alertmanager-style: a reason, not a bool)."""

    OPENED = "opened"
    UPDATED = "updated"
    REMINDED = "reminded"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"


class Severity(StrEnum):
    """How urgent a rule's alerts are."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine decided about one incident, with everything render needs."""

    reason: Reason
    incident: Incident  # as it stands after this decision
    rule: str
    subject: str  # HELP, Silent, Unknown message, Low battery, ...: the title's word
    severity: Severity
    device: Device
    feed_name: str
    message: Received | None  # the message behind it, or the device's latest known
    tags: tuple[str, ...]  # who hears it; empty: recorded in the history only
    late: bool = False
    first_message: Received | None = None  # what opened it (for "since" and "cancelled")
    open_elsewhere: tuple[str, ...] = ()  # the device's other open incidents' subjects
    first_notice: bool = False  # a resolution the recipients never heard the opening of
    last_fix: Received | None = None  # the newest message behind it with a GPS fix


class AdminKind(StrEnum):
    """Notices about the service itself, for the admin tag."""

    FEED_FAILING = "Feed failing"
    FEED_BLOCKED = "Feed blocked"
    FEED_RECOVERED = "Feed recovered"
    DELIVERY_FAILING = "Delivery failing"
    DELIVERY_RECOVERED = "Delivery recovered"
    RULES_REJECTED = "Rules rejected"
    TEST = "Test"


@dataclass(frozen=True, slots=True)
class AdminNotice:
    """One notice about the service itself."""

    kind: AdminKind
    subject: str  # the feed's or target's display name (masked)
    detail: str
    at: float
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notification's text in its two forms."""

    title: str
    body: str
    short: str  # one or two SMS segments, title included
    severity: Severity
