"""Read one SPOT field value, whatever shape it arrives in; pure: no I/O, no clock.

`parse` finds the fields (XML text, JSON scalars, or, oddly, containers) and this module
says what each one means: `to_text`, `to_int` (64-bit, never a huge literal), `to_float`
(finite only), `to_time` (`unixTime`, floored), `derive_time` (from `dateTime`, SPOT's
`SPOT_DATE_FORMAT`), `valid_unicode` (no lone surrogates); each gives None for a value it
cannot read, never an exception. `with_usable_time` (called by the watcher before storing)
replaces a message time that cannot be right (before 2007, or more than a day after
reception) with the reception time, keeping the device's value in `extra` under
`UNUSABLE_TIME`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

from alerter.models import UNUSABLE_TIME, Message

__all__ = [
    "EARLIEST_TIME",
    "LATEST_AHEAD",
    "MILLISECONDS_TIME",
    "SPOT_DATE_FORMAT",
    "Raw",
    "derive_time",
    "format_spot_datetime",
    "parse_spot_datetime",
    "to_float",
    "to_int",
    "to_text",
    "to_time",
    "valid_unicode",
    "with_usable_time",
]

_MAX_INT64 = 2**63 - 1

# A message field as decoded: XML gives text, JSON any scalar (or, oddly, a container).
Raw = object


#: SPOT's date format: in `dateTime`, and in the `startDate` / `endDate` parameters.
SPOT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def parse_spot_datetime(text: str) -> int:
    """POSIX seconds of a SPOT `dateTime` like 2013-04-02T06:28:03-0700; ValueError if not one."""
    # %z takes SPOT's colon-less offset (and +HH:MM / Z); a naive time would be a guess.
    return int(datetime.strptime(text.strip(), SPOT_DATE_FORMAT).timestamp())


def format_spot_datetime(t: float, offset: str = "+0000") -> str:
    """SPOT's date text for POSIX seconds, in UTC, with `offset` written as given."""
    return datetime.fromtimestamp(t, UTC).strftime(SPOT_DATE_FORMAT.replace("%z", offset))


#: The earliest plausible message time, 2007-01-01T00:00:00Z. SPOT's first messenger
#: reached users in November 2007; the start of that year leaves room for early units'
#: clocks without letting a zeroed or 1970-based clock through.
EARLIEST_TIME = 1_167_609_600

#: How far a message time may lie ahead of its reception (seconds). A message reaches
#: SPOT after it was sent, and devices keep GPS time: only our own clock's error can put
#: a message ahead, and 10 min covers that. Beyond it the time is wrong (year 10000,
#: milliseconds sent as seconds), and trusting it would be worse than dropping it: a HELP
#: dated ahead would make the device's real later messages, its cancel too, look older.
LATEST_AHEAD = 600

#: The `extra` key under which a message keeps a `unixTime` that `with_usable_time`
#: read as milliseconds (and divided by 1000).
MILLISECONDS_TIME = "unixTimeMilliseconds"


def with_usable_time(message: Message, received_at: float) -> Message:
    """`message` with a time that can be right; pure.

    A `unix_time` from EARLIEST_TIME to LATEST_AHEAD after `received_at` (POSIX seconds,
    the service's clock) is kept: the message is returned unchanged. A 13-digit time that
    is plausible once divided by 1000 was sent in milliseconds: it is converted (floored
    to whole seconds) and the original kept in `extra` under MILLISECONDS_TIME, since the
    device's time is then known after all. Any other time is replaced by `received_at`
    and kept in `extra` under UNUSABLE_TIME, so alerts can say the device's time was
    unusable. `extra` stays sorted; a key already there is replaced, not repeated.
    """
    if not math.isfinite(received_at):
        return message  # no clock to judge by (never the case with a real clock)
    latest = received_at + LATEST_AHEAD
    sent = message.unix_time
    if EARLIEST_TIME <= sent <= latest:
        return message
    if 10**12 <= sent < 10**13 and EARLIEST_TIME <= sent // 1000 <= latest:
        return replace(
            message,
            unix_time=sent // 1000,
            extra=_with_extra(message.extra, MILLISECONDS_TIME, str(sent)),
        )
    # The parser already kept the raw text of a time it could not read at all.
    original = dict(message.extra).get(UNUSABLE_TIME, str(sent))
    return replace(
        message,
        unix_time=int(received_at),
        extra=_with_extra(message.extra, UNUSABLE_TIME, original),
    )


def _with_extra(
    extra: tuple[tuple[str, str], ...], name: str, value: str
) -> tuple[tuple[str, str], ...]:
    return tuple(sorted([*(item for item in extra if item[0] != name), (name, value)]))


# --- scalar helpers ---------------------------------------------------------


def to_text(value: Raw) -> str | None:
    """A field as stripped text; None when absent, empty or not a scalar."""
    if isinstance(value, str):
        return valid_unicode(value).strip() or None
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    return str(value)


def to_int(value: Raw) -> int | None:
    """A 64-bit integer field (JSON number or decimal text); None when it is not one."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("-", "+") else text
        # The length cap keeps int() clear of its huge-literal guard.
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            number = int(text)
        else:
            real = to_float(text)
            number = int(real) if real is not None and real.is_integer() else None
    # SQLite stores signed 64-bit integers; anything wider is garbage, not data.
    return number if number is not None and -_MAX_INT64 <= number <= _MAX_INT64 else None


def to_time(value: Raw) -> int | None:
    """`unixTime`: a 64-bit integer, or a finite number floored to whole seconds."""
    number = to_int(value)
    if number is None:
        real = to_float(value)
        if real is not None and abs(real) <= _MAX_INT64:
            number = math.floor(real)
    return number


def to_float(value: Raw) -> float | None:
    """A finite float field; None when it is missing or not a number."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            number = float(value)  # OverflowError for an int beyond the float range
        elif isinstance(value, str) and value and len(value) <= 40:
            number = float(value)  # ValueError for text that is not a number
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def derive_time(date_time: str) -> int | None:
    """POSIX seconds of a `dateTime` text; None when it is not SPOT's date format."""
    try:
        return parse_spot_datetime(date_time)
    except (ValueError, OverflowError):
        return None


def valid_unicode(text: str) -> str:
    """`text` with any lone surrogate replaced by "?"."""
    # JSON may escape a lone surrogate ("\ud83d"), which no UTF-8 sink downstream accepts.
    if text.isascii():
        return text
    return text.encode("utf-8", errors="replace").decode("utf-8")
