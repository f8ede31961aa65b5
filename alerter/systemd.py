"""Tells systemd how the service is doing: the sd_notify protocol, without libsystemd.

A message is one datagram of `KEY=value` lines to the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a path, or the abstract namespace when it starts with `@`); without
it every call does nothing. What the service says (sd_notify(3)):

- `READY=1` once, when the first processing cycle has run (or the service is blind from
  the start: holding READY back would only get it killed at `TimeoutStartSec`);
- `WATCHDOG=1` every half `$WATCHDOG_USEC` (at most 30 s apart) while the loop is alive
  (`watchdog_due`): when the processing loop stalls it stops, and systemd restarts the
  service after `WatchdogSec=`. A blind service is *not* restarted: a restart does not
  bring SPOT back or free a disk, and a restart loop would end in `failed`, polling
  nothing; the admins, `STATUS=` and the heartbeat say it instead;
- `STATUS=` one line (`systemctl status`): what is watched, and `ok` or the reasons;
- `RELOADING=1` with `MONOTONIC_USEC=`, then `READY=1`, around a SIGHUP reload;
- `STOPPING=1` when the service stops.

A failing send is logged once, and once when it works again; it never raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from alerter.clock import Clock, sleep_or_wake
from alerter.vitals import Health

log = logging.getLogger("alerter.systemd")

#: STATUS= is refreshed (and READY=1 looked for) at least this often.
STATUS_EVERY = 30.0
#: Until READY=1 is sent, whether the first cycle has run is looked at this often.
READY_POLL = 0.25


def socket_address(value: str | None) -> str | None:
    """The address of `$NOTIFY_SOCKET`: a path, or an abstract name (`@` -> NUL); None
    when unset or of a kind this module does not speak (vsock)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between two WATCHDOG=1 (half of `$WATCHDOG_USEC`), or None when systemd
    wants none, or wants it from another process (`$WATCHDOG_PID`)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wanted_pid = environ.get("WATCHDOG_PID", "")
    if wanted_pid.isdigit() and int(wanted_pid) != (os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6 / 2


def watchdog_due(health: Health) -> bool:
    """Whether to feed the watchdog: unless the only trouble is a stalled loop (the one
    thing a restart mends). A blind service keeps running, saying so."""
    return health.healthy or health.blind


def status_line(health: Health) -> str:
    """The default STATUS=: `ok` or the reasons."""
    return health.summary()


def describe_status(feeds: int, open_incidents: int, health: Health) -> str:
    """STATUS= for `systemctl status`: `watching 3 feeds; 1 incident open; ok`."""
    return (
        f"watching {feeds} feed{'' if feeds == 1 else 's'}; "
        f"{open_incidents} incident{'' if open_incidents == 1 else 's'} open; "
        f"{health.summary()}"
    )


def one_line(text: str, limit: int = 500) -> str:
    """A STATUS= value: no line breaks (they would end the field), not too long."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class SystemdNotifier:
    """The service's side of sd_notify: READY, WATCHDOG, STATUS, RELOADING, STOPPING."""

    def __init__(
        self,
        health: Callable[[], Health],
        clock: Clock,
        *,
        ready: Callable[[], bool] = lambda: True,
        status: Callable[[Health], str] = status_line,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.health = health
        self.clock = clock
        self.ready = ready
        self.status = status
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(env) if self.address else None
        self.is_ready = False
        self._last_status: str | None = None
        self._send_failing = False
        self._status_failing = False
        if env.get("NOTIFY_SOCKET") and self.address is None:
            log.warning("NOTIFY_SOCKET is of a kind not supported here; systemd is not told")

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (NOTIFY_SOCKET is set)."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one message (`KEY=value` fields); True when it went out."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait: a full queue at systemd's end must not block the loop.
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._send_failing:
                self._send_failing = True
                log.warning(
                    "cannot tell systemd (%s); said once until it works again",
                    exc.strerror or type(exc).__name__,
                )
            return False
        if self._send_failing:
            self._send_failing = False
            log.info("systemd is told again")
        return True

    def tick(self) -> None:
        """One look at the health: READY=1 (once), STATUS= (when changed), WATCHDOG=1."""
        if self.address is None:
            return
        health = self.health()
        fields = []
        if not self.is_ready and (health.blind or self.ready()):
            fields.append("READY=1")
        line = self._status(health)
        if line != self._last_status or fields:
            fields.append(f"STATUS={line}")
        if self.watchdog is not None and watchdog_due(health):
            fields.append("WATCHDOG=1")
        if fields and self.notify(*fields):
            self._last_status = line
            if "READY=1" in fields:
                self.is_ready = True

    def _status(self, health: Health) -> str:
        try:
            line = one_line(self.status(health))
        except Exception:  # the status text is decoration; the health is what matters
            if not self._status_failing:
                self._status_failing = True
                log.exception("cannot describe the status; saying the health only")
            return one_line(health.summary())
        self._status_failing = False
        return line

    def reloading(self) -> None:
        """Before a reload: RELOADING=1 (with the monotonic time systemd expects)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading rules and targets")

    def reloaded(self, ok: bool) -> None:
        """After a reload: READY=1 again, with the status (and whether it was refused)."""
        line = self._status(self.health())
        if not ok:
            line = one_line(f"reload rejected, previous rules kept; {line}")
        self.notify("READY=1", f"STATUS={line}")
        self._last_status = line

    def around_reload(self, reload: Callable[[], bool]) -> Callable[[], None]:
        """`reload` wrapped in RELOADING=1 ... READY=1 (for the SIGHUP handler)."""

        def wrapped() -> None:
            self.reloading()
            ok = False
            try:
                ok = reload()
            finally:
                self.reloaded(ok)

        return wrapped

    def stopping(self) -> None:
        """STOPPING=1: the service is shutting down."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def every(self) -> float:
        """Seconds between two ticks: half the watchdog timeout, at most STATUS_EVERY;
        READY_POLL until READY=1 is out."""
        every = STATUS_EVERY if self.watchdog is None else min(self.watchdog, STATUS_EVERY)
        return every if self.is_ready else min(every, READY_POLL)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop`; then STOPPING=1. Without NOTIFY_SOCKET, just wait."""
        if self.address is None:
            await stop.wait()
            return
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # never let the notifier take the service down
                    log.exception("telling systemd failed; trying again")
                await sleep_or_wake(self.clock, self.every(), stop)
        finally:
            self.stopping()
