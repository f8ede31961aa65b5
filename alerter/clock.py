"""Time, injected: the engine and scheduler never read the system clock themselves.

All times are POSIX seconds (float, UTC), the unit SPOT's `unixTime` uses. Scheduling
that must not be fooled by a step of the system clock (NTP) measures with `monotonic`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the service reads the time and waits."""

    def now(self) -> float:
        """POSIX seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds that only ever move forward (an NTP step does not move them)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """POSIX seconds from the system clock."""
        return time.time()

    def monotonic(self) -> float:
        """The system's monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait for real."""
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """A clock running `speed` times faster than real time, from `start` (the demo's)."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        self.speed = speed
        self._start = time.time() if start is None else start
        self._mono0 = time.monotonic()

    def now(self) -> float:
        """Accelerated POSIX seconds."""
        return self._start + (time.monotonic() - self._mono0) * self.speed

    def monotonic(self) -> float:
        """Accelerated, and never stepped: the same as `now`."""
        return self.now()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of accelerated time."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class FakeClock:
    """A clock that moves only when told; `sleep` advances it at once (for tests)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        """The current fake time."""
        return self.t

    def monotonic(self) -> float:
        """The fake time too (a test of a clock step overrides one of them)."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance instead of waiting, and let other tasks run."""
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> None:
    """Sleep on `clock` until `seconds` pass or `wake` is set; always yields to the loop
    (a loop whose wait is 0 must still let signals and the other tasks run)."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
