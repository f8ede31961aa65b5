"""The heartbeat: an outside monitor (healthchecks.io or alike) hears that the service is
alive and seeing, and notices when it dies (`ALERTER_HEARTBEAT_URL`).

Once per poll interval at most, it looks at the one verdict (`alerter.vitals`):

- healthy: `GET URL` (a success ping);
- blind (every feed failing, the state unwritable, the outbox stuck): `POST URL/fail`
  with `Health.summary()` as the body, so the monitor alerts at once and says why;
- only the loop stalled: nothing. Silence is the signal (the monitor alerts after its
  grace time), as when the whole process is gone.

It runs as its own task with a short timeout and catches every error: a monitor that is
down never slows or stops the service. A failing ping is logged once per outage, and
once when pings work again. The URL holds the monitor's secret (a UUID or ping key):
it is never logged; the log says "the heartbeat".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from alerter import __version__
from alerter.clock import Clock, sleep_or_wake
from alerter.vitals import Health

log = logging.getLogger("alerter.heartbeat")

#: Seconds a ping may take, connecting included.
TIMEOUT = 10.0

Ping = Literal["ok", "fail"]


def fail_url(url: str) -> str:
    """healthchecks' failure endpoint: `/fail` appended to the path, the query kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


def describe_failure(exc: BaseException, timeout: float = TIMEOUT) -> str:
    """Why a ping failed, in words that never hold the URL (aiohttp's errors quote it)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({_os_reason(exc.os_error)})"
    if isinstance(exc, OSError) and exc.errno:
        return _os_reason(exc)
    return type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """The errno's standard text (asyncio's own texts quote the address)."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


class Heartbeat:
    """Pings the monitor after healthy cycles, `/fail`s while blind; never blocks."""

    def __init__(
        self,
        url: str | None,
        health: Callable[[], Health],
        clock: Clock,
        *,
        interval: float,
        session: aiohttp.ClientSession | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url
        self.health = health
        self.clock = clock
        self.interval = interval
        self.session = session
        self.timeout = timeout
        self._next_look: float | None = None  # monotonic; None: look now
        self._failing = False  # pings are failing (told once)
        self._reported: Ping | None = None  # what the monitor was last told

    def due_in(self) -> float:
        """Seconds until the next look at the health."""
        if self._next_look is None:
            return 0.0
        return max(0.0, self._next_look - self.clock.monotonic())

    async def beat(self, session: aiohttp.ClientSession) -> Ping | None:
        """Ping as the health says, unless it was looked at less than an interval ago;
        returns what was sent (failed or not), None when nothing was."""
        if self.url is None:
            return None
        now = self.clock.monotonic()
        if self._next_look is not None and now < self._next_look:
            return None
        self._next_look = now + self.interval
        try:
            health = self.health()
            if health.healthy:
                kind: Ping = "ok"
                error = await self._send(session, "GET", self.url, None)
            elif health.blind:
                kind = "fail"
                error = await self._send(session, "POST", fail_url(self.url), health.summary())
            else:
                return None  # the loop stalled: no ping, the monitor notices the silence
        except Exception as exc:  # a monitor's trouble never reaches the service
            self._outcome("fail", describe_failure(exc, self.timeout), unexpected=True)
            return "fail"
        self._outcome(kind, error)
        return kind

    async def _send(
        self, session: aiohttp.ClientSession, method: str, url: str, body: str | None
    ) -> str | None:
        """One request; the reason it failed, or None."""
        try:
            async with session.request(
                method,
                url,
                data=body.encode() if body is not None else None,
                headers={
                    "User-Agent": f"spot-alerter/{__version__}",
                    **({"Content-Type": "text/plain; charset=utf-8"} if body else {}),
                },
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    return f"the monitor answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return describe_failure(exc, self.timeout)
        return None

    def _outcome(self, kind: Ping, error: str | None, *, unexpected: bool = False) -> None:
        """Log a change only: failing, working again, the verdict the monitor hears."""
        if error is not None:
            if not self._failing:
                self._failing = True
                log.warning(
                    "the heartbeat cannot be sent: %s; said once until it works again",
                    error,
                    exc_info=unexpected,
                )
            return
        if self._failing:
            self._failing = False
            log.info("the heartbeat is sent again")
        if kind != self._reported:
            if kind == "fail":
                log.warning("the heartbeat reports the service blind")
            elif self._reported is not None:
                log.info("the heartbeat reports the service healthy again")
            self._reported = kind

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self.session is not None:
            yield self.session
            return
        async with aiohttp.ClientSession() as session:
            yield session

    async def run(self, stop: asyncio.Event) -> None:
        """Beat every interval until `stop`; without a URL, just wait for it."""
        if self.url is None:
            await stop.wait()
            return
        log.info("heartbeat: pinging every %.4gs while healthy, /fail while blind", self.interval)
        async with self._session() as session:
            # The first look comes one interval in: after the first cycles, not before.
            self._next_look = self.clock.monotonic() + self.interval
            while not stop.is_set():
                await sleep_or_wake(self.clock, self.due_in(), stop)
                if stop.is_set():
                    break
                await self.beat(session)
