"""The heartbeat against a real local HTTP receiver, on a fake clock (nothing sleeps)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from alerter.clock import FakeClock
from alerter.heartbeat import Heartbeat, describe_failure, fail_url
from alerter.vitals import Health

UUID = "5f1c3a52-9d0e-4b7a-8f2e-3c6d1e0a9b47"  # the monitor's secret
INTERVAL = 150.0
HEALTHY = Health(healthy=True, blind=False, reasons=())
STALLED = Health(healthy=False, blind=False, reasons=("the processing loop has not run for 301s",))
BLIND = Health(
    healthy=False,
    blind=True,
    reasons=("every feed is failing: Club (failing)", "the state cannot be written: disk full"),
)


@dataclass
class Ping:
    method: str
    path: str
    body: str
    at: float  # the fake clock's time when it arrived


@dataclass
class Monitor:
    """A healthchecks-like receiver on 127.0.0.1."""

    clock: FakeClock
    port: int = 0
    pings: list[Ping] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering (a hanging monitor)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/{UUID}"

    async def handle(self, request: web.Request) -> web.Response:
        self.pings.append(
            Ping(request.method, request.path, await request.text(), self.clock.now())
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(text="OK")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def free_port() -> int:
    """A port nothing listens on (for now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def monitor(clock: FakeClock) -> AsyncIterator[Monitor]:
    m = Monitor(clock)
    await m.start()
    try:
        yield m
    finally:
        await m.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Verdict:
    def __init__(self) -> None:
        self.health = HEALTHY

    def __call__(self) -> Health:
        return self.health


async def test_pings_at_most_once_per_interval_while_healthy(
    monitor: Monitor, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    hb = Heartbeat(monitor.url, Verdict(), clock, interval=INTERVAL, session=session)
    assert await hb.beat(session) == "ok"
    for step in (0.0, 1.0, 60.0, 88.0):  # 149 s after the first: not yet
        clock.advance(step)
        assert await hb.beat(session) is None
    clock.advance(1.0)
    assert await hb.beat(session) == "ok"
    assert [(p.method, p.path, p.body) for p in monitor.pings] == [
        ("GET", f"/ping/{UUID}", ""),
    ] * 2
    assert monitor.pings[1].at - monitor.pings[0].at == INTERVAL


async def test_fail_with_the_reason_while_blind_nothing_while_stalled_then_healthy_again(
    monitor: Monitor, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    verdict = Verdict()
    hb = Heartbeat(monitor.url, verdict, clock, interval=INTERVAL, session=session)
    seen = []
    for health in (HEALTHY, BLIND, BLIND, STALLED, HEALTHY):
        verdict.health = health
        seen.append(await hb.beat(session))
        clock.advance(INTERVAL)
    assert seen == ["ok", "fail", "fail", None, "ok"]
    assert [(p.method, p.path) for p in monitor.pings] == [
        ("GET", f"/ping/{UUID}"),
        ("POST", f"/ping/{UUID}/fail"),
        ("POST", f"/ping/{UUID}/fail"),
        ("GET", f"/ping/{UUID}"),
    ]
    assert monitor.pings[1].body == (
        "every feed is failing: Club (failing); the state cannot be written: disk full"
    )


async def test_run_beats_every_interval_and_stops(monitor: Monitor, clock: FakeClock) -> None:
    # No session given: the heartbeat makes its own (and closes it).
    hb = Heartbeat(monitor.url, Verdict(), clock, interval=INTERVAL)
    start = clock.t
    stop = asyncio.Event()
    task = asyncio.create_task(hb.run(stop))
    for _ in range(1000):
        if len(monitor.pings) >= 4:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    times = [p.at - start for p in monitor.pings]
    # The first look is one interval in (after the first cycles), then one per interval.
    assert times[:4] == [INTERVAL, 2 * INTERVAL, 3 * INTERVAL, 4 * INTERVAL]


async def test_a_monitor_that_is_down_is_logged_once_and_its_return_once(
    clock: FakeClock, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    monitor = Monitor(clock)
    url = f"http://127.0.0.1:{port}/ping/{UUID}"
    verdict = Verdict()
    hb = Heartbeat(url, verdict, clock, interval=INTERVAL, session=session)
    with caplog.at_level(logging.INFO, "alerter.heartbeat"):
        for health in (HEALTHY, HEALTHY, BLIND, HEALTHY):
            verdict.health = health
            assert await hb.beat(session) is not None  # tried, and went on
            clock.advance(INTERVAL)
        down = [r.getMessage() for r in caplog.records]
        await monitor.start(port)
        try:
            for _ in range(3):
                assert await hb.beat(session) == "ok"
                clock.advance(INTERVAL)
        finally:
            await monitor.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert down == [
        "the heartbeat cannot be sent: cannot connect (Connection refused); "
        "said once until it works again"
    ]
    assert messages[1:] == ["the heartbeat is sent again"]
    assert len(monitor.pings) == 3
    assert UUID not in caplog.text
    assert str(port) not in caplog.text


async def test_a_hanging_monitor_times_out_without_holding_up_the_loop(
    monitor: Monitor, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.delay = 5.0
    hb = Heartbeat(monitor.url, Verdict(), clock, interval=INTERVAL, timeout=0.2)
    stop = asyncio.Event()
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, "alerter.heartbeat"):
        task = asyncio.create_task(hb.run(stop))
        other = asyncio.create_task(other_task())
        for _ in range(500):
            if len(monitor.pings) >= 3:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, other), 5)
    assert len(monitor.pings) >= 3
    assert ticks >= 20  # the loop went on meanwhile
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "the heartbeat cannot be sent: no answer within 0.2s; said once until it works again"
    ]
    assert UUID not in caplog.text


async def test_an_error_status_is_a_failure(
    clock: FakeClock, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        hb = Heartbeat(f"http://127.0.0.1:{port}/{UUID}", Verdict(), clock, interval=1.0)
        with caplog.at_level(logging.INFO, "alerter.heartbeat"):
            for _ in range(3):
                await hb.beat(session)
                clock.advance(1.0)
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records] == [
        "the heartbeat cannot be sent: the monitor answered HTTP 404; "
        "said once until it works again"
    ]


async def test_an_unexpected_error_is_caught_and_logged_once(
    monitor: Monitor, clock: FakeClock, session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def broken() -> Health:
        raise RuntimeError("the verdict broke")

    hb = Heartbeat(monitor.url, broken, clock, interval=1.0)
    with caplog.at_level(logging.INFO, "alerter.heartbeat"):
        for _ in range(3):
            assert await hb.beat(session) == "fail"
            clock.advance(1.0)
    (record,) = caplog.records
    assert record.getMessage().startswith("the heartbeat cannot be sent: RuntimeError")
    assert record.exc_info is not None


async def test_without_a_url_run_just_waits_for_stop(clock: FakeClock) -> None:
    hb = Heartbeat(None, Verdict(), clock, interval=INTERVAL)
    stop = asyncio.Event()
    task = asyncio.create_task(hb.run(stop))
    await asyncio.sleep(0.01)
    assert not task.done()  # a task that returned would end the service's wait
    stop.set()
    await asyncio.wait_for(task, 1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hc-ping.com/abc", "https://hc-ping.com/abc/fail"),
        ("https://hc-ping.com/abc/", "https://hc-ping.com/abc/fail"),
        ("https://hc-ping.com/key/slug?create=1", "https://hc-ping.com/key/slug/fail?create=1"),
    ],
)
def test_fail_url(url: str, expected: str) -> None:
    assert fail_url(url) == expected


def test_failures_are_described_without_the_url() -> None:
    assert describe_failure(TimeoutError(), 10) == "no answer within 10s"
    assert describe_failure(ConnectionResetError(104, "Connection reset by peer")) == (
        "Connection reset by peer"
    )
    exc = aiohttp.InvalidURL(f"http://x/{UUID}")
    assert describe_failure(exc) == "InvalidURL"
