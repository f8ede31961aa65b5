"""The values that flow through the pipeline, and the records the store keeps. Frozen; no I/O.

Every word that code matches on (a rule's subject, a feed error's kind, what the admins
were told, a delivery's or an incident's state, why nobody was paged) is an enum here,
so renaming one cannot silently break a title or a comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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

#: SPOT keeps a feed's messages this long (seconds).
SPOT_KEEPS = 7 * 86400.0

#: The `extra` key under which a message keeps the time its device sent when that time
#: was unusable (its `unix_time` is then when the service received it).
UNUSABLE_TIME = "unusableTime"

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


@dataclass(frozen=True, slots=True)
class Received:
    """A stored message with where and when the service got it."""

    message: Message
    feed_id: str
    received_at: float
    initial: bool = False  # stored while the feed's history was first read


def newest_fix(candidates: Iterable[Received | None]) -> Received | None:
    """The newest of these messages that carries a GPS fix."""
    fixes = [r for r in candidates if r is not None and r.message.has_position]
    return max(fixes, key=lambda r: (r.message.unix_time, r.message.id), default=None)


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
    acknowledged_by: str | None = None  # who took it (a name as they typed it, cleaned)
    acknowledged_at: float | None = None
    acknowledged_via: str | None = None  # how: `cli`, `web:TAG` (the token's tag)

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


class HeldBack(StrEnum):
    """Why a decision paged nobody: the answer to "why was nobody told?"."""

    UPDATE_TOO_SOON = "a repeat within the rule's `updates` of the previous notification"
    UPDATES_OFF = "the rule sends no updates (`updates: off`)"
    NEWER_IN_POLL = "a newer repeat in the same poll carries the update"
    ALREADY_OPEN = "the incident is already open; a repeat only updates it"
    HISTORY = "first-start history: sent before the service watched the feed"
    NOBODY_TO_TELL = "the rule notifies nobody and nobody heard of the incident"
    NO_TARGET = "no Apprise URL carries the tags it was meant for"


class Subject(StrEnum):
    """What a rule's incidents are about; titles and wording are chosen by it."""

    HELP = "HELP"
    SILENT = "Silent"
    LOW_BATTERY = "Low battery"
    UNKNOWN = "Unknown message"
    EVENT = "message"  # another listed type: its alerts say "{TYPE} message"


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
    subject: str  # the title's word: HELP, Silent, Unknown message, CUSTOM message, ...
    kind: Subject  # what the incident is about (wording is chosen by this, not `subject`)
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
    held_back: HeldBack | None = None  # why nobody is told (set whenever `tags` is empty)


class AdminKind(StrEnum):
    """Notices about the service itself, for the admin tag."""

    FEED_FAILING = "Feed failing"
    FEED_BLOCKED = "Feed blocked"
    FEED_RECOVERED = "Feed recovered"
    DELIVERY_FAILING = "Delivery failing"
    DELIVERY_RECOVERED = "Delivery recovered"
    RULES_REJECTED = "Rules rejected"
    MESSAGE_SET_ASIDE = "Message set aside"
    STATE_UNWRITABLE = "State unwritable"
    STATE_RECOVERED = "State recovered"
    TEST = "Test"


@dataclass(frozen=True, slots=True)
class AdminNotice:
    """One notice about the service itself."""

    kind: AdminKind
    subject: str  # the feed's or target's display name (masked)
    detail: str
    at: float
    since: float | None = None


#: How the pipeline raises a notice for the admins (and which target it is not sent to).
RaiseNotice = Callable[[AdminNotice, str | None], None]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notification's text in its two forms."""

    title: str
    body: str
    short: str  # one or two SMS segments, title included
    severity: Severity


# -- records the store keeps ------------------------------------------------------------


class FeedErrorKind(StrEnum):
    """Why a request to SPOT gave no usable data."""

    UNAVAILABLE = "unavailable"  # transient: retried with backoff
    BLOCKED = "blocked"  # HTTP 403/429: long back-off
    CONFIG = "config"  # SPOT refuses the feed itself


class FeedStatus(StrEnum):
    """A feed's health, and what the admins were last told of it."""

    OK = "ok"
    FAILING = "failing"
    BLOCKED = "blocked"


class DeliveryState(StrEnum):
    """Where one notification to one target stands."""

    PENDING = "pending"
    SENT = "sent"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the store remembers of one feed between requests and restarts."""

    feed_id: str
    name: str | None = None
    last_request: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    failures: int = 0
    error_kind: FeedErrorKind | None = None
    last_error: str | None = None
    not_before: float | None = None
    synced_at: float | None = None
    watched_since: float | None = None
    told: FeedStatus = FeedStatus.OK


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification to write to the outbox, with its targets."""

    rendered: Rendered
    kind: str  # the decision's reason, or the admin notice's kind
    targets: tuple[tuple[str, str, bool], ...]  # (target id, masked label, short form)
    incident_id: int | None = None
    resolution: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification owed to one target."""

    id: int
    notification_id: int
    incident_id: int | None
    target: str
    label: str
    short: bool
    attempts: int
    next_attempt: float
    title: str
    body: str
    short_text: str
    severity: Severity
    kind: str
    resolution: bool
    incident_state: IncidentState | None
    created_at: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One notification of an incident to one target, as the outbox recorded it."""

    notification_id: int
    incident_id: int
    created_at: float
    kind: str
    title: str
    label: str
    state: DeliveryState
    sent_at: float | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """A target's delivery record."""

    target: str
    label: str
    failures: int
    failing_since: float | None
    told: bool


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One line of an incident's history: what was decided, and who heard or why nobody."""

    incident_id: int
    at: float
    reason: Reason
    message_id: int | None
    notified: bool
    held_back: HeldBack | None = None
