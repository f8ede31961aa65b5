"""Pure: a device's rhythm (its recent message times and newest message per type).

The engine judges silence against a device's usual gap and finds stored cancels by
type; the store only persists what `advance` computes here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from alerter.models import RHYTHM_WINDOW, Message


def usual_gap(recent_times: tuple[int, ...]) -> float | None:
    """The device's usual gap between messages: the median of its recent gaps, if known."""
    times = sorted(set(recent_times))
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    if len(gaps) < 2:
        return None
    mid = len(gaps) // 2
    return float(gaps[mid]) if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2


def merge_recent_times(times: Iterable[int], new: Iterable[int]) -> list[int]:
    """A device's newest distinct message times, newest first, at most RHYTHM_WINDOW."""
    return sorted(set(times).union(new), reverse=True)[:RHYTHM_WINDOW]


@dataclass(frozen=True, slots=True)
class Rhythm:
    """What the store keeps of one device besides its name and feed."""

    last_message_id: int | None = None
    last_time: int | None = None
    recent_times: tuple[int, ...] = ()  # newest first
    last_by_type: dict[str, int] = field(default_factory=dict)  # newest unixTime per type


def advance(rhythm: Rhythm, new: Sequence[Message]) -> Rhythm:
    """The device's rhythm after `new` messages (not empty) were stored."""
    newest = max(new, key=lambda m: (m.unix_time, m.id))
    by_type = dict(rhythm.last_by_type)
    for m in new:
        by_type[m.type] = max(by_type.get(m.type, m.unix_time), m.unix_time)
    last_id, last_time = rhythm.last_message_id, rhythm.last_time
    if last_time is None or (newest.unix_time, newest.id) > (last_time, last_id or 0):
        last_id, last_time = newest.id, newest.unix_time
    times = merge_recent_times(rhythm.recent_times, (m.unix_time for m in new))
    return Rhythm(last_id, last_time, tuple(times), by_type)
