"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alerter.clock import FakeClock
from alerter.systemd import (
    SystemdNotifier,
    describe_status,
    socket_address,
    watchdog_interval,
)
from alerter.vitals import Health

HEALTHY = Health(healthy=True, blind=False, reasons=())
STALLED = Health(healthy=False, blind=False, reasons=("the processing loop has not run for 301s",))
BLIND = Health(healthy=False, blind=True, reasons=("every feed is failing: Club (failing)",))


@dataclass
class Systemd:
    """The listening end of NOTIFY_SOCKET."""

    sock: socket.socket
    address: str  # as NOTIFY_SOCKET spells it

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, parsed (`KEY=value` lines)."""
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


@pytest.fixture
def systemd() -> Iterator[Systemd]:
    # A short directory of its own: an AF_UNIX path holds at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sd") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            yield Systemd(sock, path)


@pytest.fixture
def abstract_systemd() -> Iterator[Systemd]:
    name = f"spot-alerter-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        yield Systemd(sock, "@" + name)


class Vitals:
    """What the injected callables read: the verdict, and whether a cycle has run."""

    def __init__(self) -> None:
        self.health = HEALTHY
        self.cycled = False


async def let_run(clock: FakeClock, seconds: float, systemd: Systemd) -> list[dict[str, str]]:
    """Let the notifier's task run for `seconds` of the fake clock; what it sent meanwhile
    (drained as it goes: a datagram socket queues only a few)."""
    got: list[dict[str, str]] = []
    end = clock.t + seconds
    for _ in range(100_000):
        if clock.t >= end:
            break
        await asyncio.sleep(0)
        got += systemd.messages()
    return got


def notifier(systemd: Systemd, v: Vitals, **env: str) -> SystemdNotifier:
    environ = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "2000000", **env}
    return SystemdNotifier(lambda: v.health, FakeClock(), ready=lambda: v.cycled, environ=environ)


def test_ready_once_watchdog_while_healthy_and_not_while_the_loop_is_stalled(
    systemd: Systemd,
) -> None:
    v = Vitals()
    n = notifier(systemd, v)
    n.tick()  # no cycle yet: not ready, but alive
    assert systemd.messages() == [{"STATUS": "ok", "WATCHDOG": "1"}]
    v.cycled = True
    n.tick()
    assert systemd.messages() == [{"READY": "1", "STATUS": "ok", "WATCHDOG": "1"}]
    for _ in range(3):
        n.tick()
    assert systemd.messages() == [{"WATCHDOG": "1"}] * 3

    v.health = STALLED
    n.tick()
    n.tick()
    assert systemd.messages() == [{"STATUS": "the processing loop has not run for 301s"}]

    v.health = HEALTHY
    n.tick()
    assert systemd.messages() == [{"STATUS": "ok", "WATCHDOG": "1"}]


def test_a_blind_service_is_ready_and_fed_to_the_watchdog_saying_why(systemd: Systemd) -> None:
    v = Vitals()
    v.health = BLIND  # e.g. the disk is full at start: no cycle can commit
    n = notifier(systemd, v)
    n.tick()
    n.tick()
    assert systemd.messages() == [
        {"READY": "1", "STATUS": "every feed is failing: Club (failing)", "WATCHDOG": "1"},
        {"WATCHDOG": "1"},
    ]


def test_without_watchdog_usec_no_watchdog(systemd: Systemd) -> None:
    v = Vitals()
    v.cycled = True
    n = SystemdNotifier(lambda: v.health, FakeClock(), environ={"NOTIFY_SOCKET": systemd.address})
    n.tick()
    n.tick()
    assert systemd.messages() == [{"READY": "1", "STATUS": "ok"}]
    assert n.every() == 30.0


async def test_run_sends_ready_once_watchdog_repeatedly_then_stopping(systemd: Systemd) -> None:
    v = Vitals()
    clock = FakeClock()
    n = SystemdNotifier(
        lambda: v.health, clock, ready=lambda: v.cycled,
        environ={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "120000000"},
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    got = await let_run(clock, 1, systemd)
    v.cycled = True  # the first cycle ran
    got += await let_run(clock, 300, systemd)  # five minutes of the fake clock
    stop.set()
    await asyncio.wait_for(task, 5)
    got += systemd.messages()

    assert sum("READY" in m for m in got) == 1
    watchdogs = sum("WATCHDOG" in m for m in got)
    assert watchdogs >= 300 / 30  # every 30 s at most (half of 120 s would be 60 s)
    assert n.every() == 30.0
    assert got[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert all("STATUS" in m for m in got if "READY" in m)


async def test_run_stops_feeding_the_watchdog_when_the_loop_stalls(systemd: Systemd) -> None:
    v = Vitals()
    v.cycled = True
    clock = FakeClock()
    n = SystemdNotifier(
        lambda: v.health, clock, ready=lambda: v.cycled,
        environ={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "2000000"},
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    healthy = await let_run(clock, 10, systemd)
    v.health = STALLED
    await let_run(clock, 1, systemd)  # the tick in flight when it turned
    stalled = await let_run(clock, 10, systemd)
    v.health = HEALTHY
    again = await let_run(clock, 3, systemd)
    stop.set()
    await asyncio.wait_for(task, 5)

    assert sum("WATCHDOG" in m for m in healthy) >= 9  # every second (WATCHDOG_USEC/2)
    assert not any("WATCHDOG" in m for m in stalled)
    assert sum("WATCHDOG" in m for m in again) >= 2


def test_abstract_namespace_socket(abstract_systemd: Systemd) -> None:
    v = Vitals()
    v.cycled = True
    n = notifier(abstract_systemd, v)
    n.tick()
    assert abstract_systemd.messages() == [{"READY": "1", "STATUS": "ok", "WATCHDOG": "1"}]


def test_reload_is_announced_and_ready_follows(systemd: Systemd) -> None:
    v = Vitals()
    n = notifier(systemd, v)
    calls: list[str] = []

    def reload() -> bool:
        calls.append("reload")
        return True

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.around_reload(reload)()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, ready = systemd.messages()
    assert calls == ["reload"]
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert ready == {"READY": "1", "STATUS": "ok"}


def test_a_rejected_reload_says_so_and_a_failing_one_still_ends_ready(systemd: Systemd) -> None:
    n = notifier(systemd, Vitals())
    n.around_reload(lambda: False)()

    def broken() -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        n.around_reload(broken)()
    got = systemd.messages()
    assert [m.get("READY") for m in got] == [None, "1", None, "1"]
    assert got[1]["STATUS"] == "reload rejected, previous rules kept; ok"


def test_status_is_one_line(systemd: Systemd) -> None:
    v = Vitals()
    n = SystemdNotifier(
        lambda: v.health, FakeClock(),
        status=lambda h: f"watching 3 feeds;\n1 incident open; {h.summary()}",
        environ={"NOTIFY_SOCKET": systemd.address},
    )  # fmt: skip
    n.tick()
    assert systemd.messages() == [{"READY": "1", "STATUS": "watching 3 feeds; 1 incident open; ok"}]


def test_a_status_that_cannot_be_described_falls_back_to_the_health(
    systemd: Systemd, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(h: Health) -> str:
        raise RuntimeError("database is locked")

    n = SystemdNotifier(
        lambda: BLIND, FakeClock(), status=broken, environ={"NOTIFY_SOCKET": systemd.address}
    )
    with caplog.at_level(logging.INFO, "alerter.systemd"):
        for _ in range(3):
            n.tick()
    assert systemd.messages() == [{"READY": "1", "STATUS": "every feed is failing: Club (failing)"}]
    assert len(caplog.records) == 1  # once, not every tick


@pytest.mark.parametrize(
    ("feeds", "incidents", "health", "expected"),
    [
        (3, 1, HEALTHY, "watching 3 feeds; 1 incident open; ok"),
        (
            1,
            0,
            STALLED,
            "watching 1 feed; 0 incidents open; the processing loop has not run for 301s",
        ),
    ],
)
def test_describe_status(feeds: int, incidents: int, health: Health, expected: str) -> None:
    assert describe_status(feeds, incidents, health) == expected


def test_without_notify_socket_nothing_is_sent_and_run_waits_for_stop() -> None:
    n = SystemdNotifier(lambda: HEALTHY, FakeClock(), environ={})
    assert not n.enabled
    assert not n.notify("READY=1")
    n.tick()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(n.run(stop))
        await asyncio.sleep(0.01)
        assert not task.done()  # a task that returned would end the service's wait
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(go())


def test_a_send_failure_is_logged_once_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tempfile.TemporaryDirectory(prefix="sd") as tmp:
        path = str(Path(tmp) / "notify")
        n = SystemdNotifier(lambda: HEALTHY, FakeClock(), environ={"NOTIFY_SOCKET": path})
        with caplog.at_level(logging.INFO, "alerter.systemd"):
            for _ in range(3):
                assert not n.notify("STATUS=x")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(path)
                assert n.notify("STATUS=x")
                assert n.notify("STATUS=y")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("cannot tell systemd (")
    assert messages[1] == "systemd is told again"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract", "\0abstract"),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value: str | None, expected: str | None) -> None:
    assert socket_address(value) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "4242"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}, None),  # for another process
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected
