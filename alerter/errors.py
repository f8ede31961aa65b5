"""The project's exceptions.

    AlerterError
    ├── ConfigError          settings, a rule file or the Apprise config is invalid;
    │                        carries one Problem (file, line, message) per fault
    ├── FeedError            a request to SPOT gave no usable data
    │   ├── FeedUnavailable  transient: 5xx, timeout, connection error, HTML page,
    │   │                    truncated or garbage body; retried with backoff
    │   ├── FeedBlocked      HTTP 403: SPOT blocked the IP or the feed; long back-off
    │   └── FeedConfigFault  SPOT says the feed is wrong: E-0160 not found, not active,
    │                        password required; the admins are told
    └── StoreError           the SQLite state cannot be read or written

aiohttp, asyncio and sqlite3 errors are translated into these at the edge
(`spot.client`, `store`); nothing above those modules sees a library exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from alerter.models import FeedErrorKind


class AlerterError(Exception):
    """Base of every error this project raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault in a configuration source, printable as `file:line: message`."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


class ConfigError(AlerterError):
    """Settings, rules or the Apprise config are invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FeedError(AlerterError):
    """A request to SPOT gave no usable data."""

    kind = FeedErrorKind.UNAVAILABLE


class FeedUnavailable(FeedError):
    """Transient: retry later with backoff."""

    kind = FeedErrorKind.UNAVAILABLE


class FeedBlocked(FeedError):
    """HTTP 403: SPOT blocked this IP or feed for polling too fast."""

    kind = FeedErrorKind.BLOCKED


class FeedConfigFault(FeedError):
    """SPOT refuses the feed itself (not found, not active, password required)."""

    kind = FeedErrorKind.CONFIG

    def __init__(self, code: str | None, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{text} ({code})" if code else text)


class StoreError(AlerterError):
    """The SQLite state cannot be read or written."""
