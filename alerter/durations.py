"""Durations as admins write them: `90`, `90s`, `15m`, `2h`, `1d`, `1h30m`, `0.5s`."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string; ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90s, 15m or 2h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected a duration like 90s, 15m or 2h, got {value!r}")
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 90s, 15m or 2h, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: `45s`, `12 min`, `3 h 05 min`, `2 d 4 h`."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m:02d} min" if m else f"{h} h"
    d, rem = divmod(s, 86400)
    h = rem // 3600
    return f"{d} d {h} h" if h else f"{d} d"


def ago(t: float | None, now: float) -> str:
    """`7 min ago`, or `never` when there is no time."""
    return "never" if t is None else f"{format_duration(now - t)} ago"
