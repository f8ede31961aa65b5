"""What the acknowledgement page needs from the service (`AckDesk`), and its form's proof.

Pure: no I/O and no clock (`now` is an argument). The page (`/ack/{token}`, served by
`alerter.web.views`) knows incidents only through an `AckDesk`, which the composition root
builds from the token maths (`alerter.ack`) and the processor (`Processor.acknowledge`):

- `view(token)`: the incident behind a valid token while it is open or acknowledged; None
  for a forged or altered token, an unknown incident, or a resolved one (the page then
  answers the same 404 as any unknown path). A view must never acknowledge.
- `take(token, name)`: acknowledge, at most once; `AckResult` says whether it was taken
  now, had already been taken (by whom, when), or is not open (any token `view` refuses).

The form carries a proof bound to the token (`FormProof`): an HMAC of the token and the
time the page was served, so a POST that did not come from the page is refused (403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from alerter.models import IncidentState

#: How long a served form may be submitted (seconds).
PROOF_TTL = 12 * 3600.0
#: How far ahead of the server's clock a proof may claim to be (clock steps).
PROOF_SKEW = 300.0


@dataclass(frozen=True, slots=True)
class Position:
    """One of the device's messages: when, and where (None: no GPS fix)."""

    at: float  # the message's time, POSIX seconds
    latitude: float | None = None
    longitude: float | None = None
    kind: str = ""  # the message's type: HELP, TRACK, ...

    @property
    def has_fix(self) -> bool:
        """True when it carries a position."""
        return self.latitude is not None and self.longitude is not None


@dataclass(frozen=True, slots=True)
class Told:
    """One alert of the incident to one recipient."""

    at: float  # when it was sent (or, while `delivered` is False, queued)
    whom: str  # the recipient's tag or the target's masked label; never a URL with secrets
    what: str  # the alert's kind: HELP, HELP update, Reminder, Escalated, Acknowledged, ...
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An open (or acknowledged) incident as the acknowledgement page shows it."""

    incident_id: int
    who: str  # the device's name
    what: str  # the subject: HELP, Silent, ...
    since: float  # when it began (the first message behind it), POSIX seconds
    state: IncidentState  # OPEN or ACKNOWLEDGED; a resolved incident has no view
    feed: str = ""  # the feed's display name
    positions: tuple[Position, ...] = ()  # the latest messages, newest first (a few)
    told: tuple[Told, ...] = ()  # who was told and when, oldest first
    text: str | None = None  # the device's message text, if any
    battery: str | None = None  # GOOD, LOW, or None
    taken_by: str | None = None  # who acknowledged it
    taken_at: float | None = None

    @property
    def where(self) -> Position | None:
        """The latest position with a GPS fix, None when there is none."""
        return next((p for p in self.positions if p.has_fix), None)


class TakeStatus(StrEnum):
    """What a `take` did (the web's word for `alerter.ack.AckStatus`)."""

    TAKEN = "taken"  # acknowledged now, by this name
    ALREADY = "already"  # someone had taken it before (`by`, `at`: who and when)
    NOT_OPEN = "not-open"  # resolved, unknown, forged: nothing to take


@dataclass(frozen=True, slots=True)
class AckResult:
    """The answer to `take`."""

    status: TakeStatus
    by: str | None = None  # TAKEN: the name given; ALREADY: who took it first
    at: float | None = None  # when it was taken


class AckDesk(Protocol):
    """The incidents behind acknowledgement tokens (the adapter to `alerter.ack` and
    `Processor.acknowledge`). Both are called on the event loop and must not block long."""

    def view(self, token: str) -> IncidentView | None:
        """The incident, or None (forged, altered, unknown or resolved: 404). No writes."""
        ...

    def take(self, token: str, name: str) -> AckResult:
        """Acknowledge as `name` (already cleaned by `clean_name`, never empty)."""
        ...


class FormProof:
    """Signed proofs that a form was served for a token: `ISSUED.MAC`, MAC over both."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, token: str, now: float) -> str:
        """A proof for the form served now for `token`."""
        issued = int(now)
        return f"{issued}.{self._mac(token, issued)}"

    def check(self, token: str, proof: str, now: float) -> bool:
        """True when `proof` was issued for `token` within `PROOF_TTL` (constant time)."""
        issued_text, dot, mac = proof.partition(".")
        if not dot or not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        fresh = -PROOF_SKEW <= now - issued <= PROOF_TTL
        return hmac.compare_digest(mac.encode(), self._mac(token, issued).encode()) and fresh

    def _mac(self, token: str, issued: int) -> str:
        message = b"ack-form\0" + token.encode("utf-8", "surrogateescape") + b"\0%d" % issued
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
