"""The real `alerter run` as systemd and an outside monitor see it: the heartbeat pings
while healthy and `/fail`s while blind; sd_notify says READY once, feeds the watchdog,
announces a reload and the stop; the log starts with the version and never holds the
heartbeat's secret."""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from e2e_support import World, until

from alerter import __version__

UUID = "0b9f6f2e-7c1d-4e55-9a3b-2f8e6d4c1a70"


@dataclass
class Monitor:
    """A healthchecks-like receiver on 127.0.0.1."""

    pings: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/{UUID}"

    def kinds(self) -> list[str]:
        return ["fail" if path.endswith("/fail") else "ok" for _, path, _ in self.pings]

    async def handle(self, request: web.Request) -> web.Response:
        self.pings.append((request.method, request.path, await request.text()))
        return web.Response(text="OK")


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    m = Monitor()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", m.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    m.port = runner.addresses[0][1]
    try:
        yield m
    finally:
        await runner.cleanup()


@dataclass
class Systemd:
    """The listening end of NOTIFY_SOCKET; keeps every message, drained on each look."""

    sock: socket.socket
    got: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.got
            self.got.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def count(self, key: str) -> int:
        return sum(key in m for m in self.messages())

    def status(self) -> str:
        """The latest STATUS= (what `systemctl status` shows)."""
        return next((m["STATUS"] for m in reversed(self.messages()) if "STATUS" in m), "")


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    """A datagram socket as NOTIFY_SOCKET (World.start passes the environment on)."""
    with tempfile.TemporaryDirectory(prefix="sd") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WATCHDOG=1 every second
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
            yield Systemd(sock)


async def test_heartbeat_and_systemd_follow_the_verdict(
    world: World, monitor: Monitor, systemd: Systemd
) -> None:
    service = await world.start(ALERTER_HEARTBEAT_URL=monitor.url, ALERTER_FEED_FAILING_AFTER="1s")
    await until(lambda: systemd.count("READY") == 1, what="READY=1")
    await until(lambda: monitor.kinds().count("ok") >= 3, what="three pings")
    await until(lambda: systemd.count("WATCHDOG") >= 2, what="the watchdog fed")
    assert monitor.kinds() == ["ok"] * len(monitor.pings)
    assert all(method == "GET" for method, _, _ in monitor.pings)
    ready = next(m for m in systemd.messages() if "READY" in m)
    assert ready["STATUS"].endswith("ok")
    assert ready["STATUS"].startswith("watching 1 feed; ")

    # SPOT fails every request: every feed failing, the service is blind.
    world.feed.fail("500", times=10_000)
    await until(lambda: "fail" in monitor.kinds(), what="/fail")
    method, path, body = next(p for p in monitor.pings if p[1].endswith("/fail"))
    assert (method, path) == ("POST", f"/ping/{UUID}/fail")
    assert "every feed is failing: Club (failing)" in body
    await until(
        lambda: "every feed is failing: Club (failing)" in systemd.status(), what="STATUS: why"
    )
    fed = systemd.count("WATCHDOG")
    await until(lambda: systemd.count("WATCHDOG") > fed + 1, what="the watchdog fed while blind")

    # SPOT answers again: healthy, pinged again.
    world.feed._faults.clear()
    failed = len(monitor.pings)
    await until(lambda: "ok" in monitor.kinds()[failed:], what="pinged again after recovery")
    await until(lambda: systemd.status().endswith("; ok"), what="STATUS: ok again")

    # SIGHUP: RELOADING=1, then READY=1 again.
    service.signal(signal.SIGHUP)
    await until(lambda: systemd.count("RELOADING") == 1, what="RELOADING=1")
    await until(lambda: systemd.count("READY") == 2, what="READY=1 after the reload")
    reloading = next(m for m in systemd.messages() if "RELOADING" in m)
    assert int(reloading["MONOTONIC_USEC"]) > 0

    await service.stop()
    await asyncio.sleep(0.1)
    assert systemd.count("STOPPING") >= 1
    assert systemd.count("READY") == 2  # once at start, once after the reload

    log = service.log()
    first = log.splitlines()[0]
    assert first.endswith(f"spot-alerter {__version__} starting"), first
    assert "heartbeat: pinging every" in log
    assert UUID not in log
    assert UUID[:8] not in log
    assert monitor.url not in log
