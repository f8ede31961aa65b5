"""The real `alerter run` process against the local SPOT simulator and local receivers.

Each test starts `python -m alerter run` with short intervals, scripts devices on the
simulator, and checks exactly what each target received, in order. The process is
stopped with SIGTERM, killed with SIGKILL and restarted, and reloaded with SIGHUP.
Nothing sleeps to wait for a rule: every wait polls for an outcome with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from alerter.clock import SystemClock
from alerter.sim import SimDevice, SimFeed, Simulator

if TYPE_CHECKING:
    from conftest import JsonReceiver, SmtpServer

INTERVAL = 0.4  # seconds between two requests of one feed
SPACING = 0.02  # seconds between any two requests
PASSWORD = "s3cret-feed-pass"

RULES = """\
rules:
  - name: help
    when: {type: [HELP]}
    notify: [rescue]
    severity: critical
    repeat: 4s
    updates: 1s
    escalate:
      - after: 2.5s
        notify: [rescue-backup]
  - name: help-cancel
    when: {type: [HELP-CANCEL]}
    resolves: help
    notify: [rescue]
  - name: stale-track
    when: {silent_for: 2s, tracking: [TRACK]}
    notify: [rescue]
    severity: warning
  - name: stop
    when: {type: [STOP, POWER-OFF]}
    resolves: stale-track
    notify: []
"""


async def until(cond: Callable[[], object], within: float = 20.0, what: str = "") -> None:
    """Poll `cond` until it holds; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


def kinds(bodies: list[dict[str, Any]]) -> list[str]:
    """Each alert's kind: its title up to the colon."""
    return [b["title"].split(":")[0] for b in bodies]


class Alerter:
    """The `alerter run` process, restartable on the same state directory."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with (self.root / f"alerter-{self.starts}.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "alerter", "run",
                cwd=self.root, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip

    def log(self) -> str:
        return "\n".join(
            (self.root / f"alerter-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 15.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), within)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert await self.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await self.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class World:
    """The simulator, the receivers and the service, wired together."""

    def __init__(
        self, root: Path, sim: Simulator, receiver: JsonReceiver, smtp: SmtpServer
    ) -> None:
        self.sim = sim
        self.receiver = receiver
        self.smtp = smtp
        self.feed: SimFeed = sim.add_feed("0E2EFEED0000000000000001", "Club", password=PASSWORD)
        self.alice: SimDevice = self.feed.add_device("0-1000001", "Alice")
        self.bob: SimDevice = self.feed.add_device("0-1000002", "Bob", model="SPOTTRACE")
        self.root = root
        self.apprise = root / "apprise.yml"
        self.rules = root / "rules.yml"
        self.rules.write_text(RULES)
        self.apprise.write_text(
            "urls:\n"
            f"  - {receiver.url('/rescue')}:\n      tag: rescue\n"
            f"  - {receiver.url('/backup')}:\n      tag: rescue-backup\n"
            f"  - {receiver.url('/admin')}:\n      tag: admin\n"
            f"  - {smtp.url(to='family@y.org')}:\n      tag: rescue\n"
            f"  - {smtp.url(to='sms@y.org')}:\n      tag: rescue-backup, sms\n"
        )
        self.service: Alerter | None = None

    def now(self) -> float:
        return time.time()

    async def start(self, feeds: list[SimFeed] | None = None) -> Alerter:
        base = self.sim.base_url
        assert base is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTER_")}
        listed = [
            {"id": f.id, "name": f.name, **({"password": f.password} if f.password else {})}
            for f in (feeds or [self.feed])
        ]
        env.update(
            ALERTER_FEEDS=json.dumps(listed),
            ALERTER_SPOT_BASE_URL=base,
            ALERTER_POLL_INTERVAL=str(INTERVAL),
            ALERTER_FEED_SPACING=str(SPACING),
            ALERTER_REQUEST_TIMEOUT="2",
            ALERTER_RULES=str(self.rules),
            ALERTER_APPRISE_CONFIG=str(self.apprise),
            ALERTER_STATE_DIR=str(self.root / "state"),
            ALERTER_TIMEZONE="Europe/Zurich",
        )
        self.service = Alerter(self.root, env)
        await self.service.start()
        return self.service

    def polls(self, feed: SimFeed | None = None) -> int:
        fid = (feed or self.feed).id
        return sum(1 for r in self.sim.requests if r.feed_id == fid and r.status == 200)

    async def next_polls(self, count: int = 2, feed: SimFeed | None = None) -> None:
        """Wait until the service has polled `count` more times (it saw everything before)."""
        target = self.polls(feed) + count
        await until(lambda: self.polls(feed) >= target, what=f"{count} more polls")

    def got(self, path: str) -> list[str]:
        return kinds(self.receiver.accepted(path))

    def mails(self, to: str) -> list[Any]:
        return [m for m in self.smtp.messages if to in str(m["To"])]


@pytest.fixture
async def world(
    tmp_path: Path, json_receiver: JsonReceiver, smtp_server: SmtpServer
) -> AsyncIterator[World]:
    sim = Simulator(SystemClock())
    await sim.start()
    w = World(tmp_path, sim, json_receiver, smtp_server)
    try:
        yield w
    finally:
        if w.service is not None:
            await w.service.stop()
        await sim.stop()


async def test_help_story_reaches_each_target_exactly_once_in_order(world: World) -> None:
    service = await world.start()
    await world.next_polls(2)

    world.alice.send("HELP", world.now(), 46.55712, 7.99213, content="Fell, ankle broken")
    await until(lambda: world.got("/rescue") == ["HELP"], what="HELP")
    await asyncio.sleep(1.2)  # the device repeats HELP a little later (`updates: 1s`)
    world.alice.send("HELP", world.now(), 46.55748, 7.99262, content="Fell, ankle broken")
    await until(lambda: world.got("/rescue") == ["HELP", "HELP update"], what="update")
    await until(lambda: world.got("/backup") == ["Escalated"], what="escalation")
    await until(lambda: "Reminder 1" in world.got("/backup"), what="reminder")
    world.alice.send("HELP-CANCEL", world.now(), content="The help message has been cancelled")
    await until(lambda: "HELP cancelled" in world.got("/backup"), what="cancel")
    await world.next_polls(3)

    assert world.got("/rescue") == ["HELP", "HELP update", "Reminder 1", "HELP cancelled"]
    assert world.got("/backup") == ["Escalated", "Reminder 1", "HELP cancelled"]
    assert world.got("/admin") == []
    help_ = world.receiver.accepted("/rescue")[0]
    assert "46.55712, 7.99213" in help_["message"]
    assert "openstreetmap.org/?mlat=46.55712&mlon=7.99213" in help_["message"]
    assert "Fell, ankle broken" in help_["message"]
    update = world.receiver.accepted("/rescue")[1]
    assert "46.55748, 7.99262" in update["message"]
    # Real mail: the long form to the family, the SMS form to the phone gateway.
    family = world.mails("family@y.org")
    assert [m["Subject"].split(":")[0] for m in family] == [
        "HELP", "HELP update", "Reminder 1", "HELP cancelled",
    ]  # fmt: skip
    assert "https://www.openstreetmap.org/?mlat=46.55712" in family[0].get_content()
    sms = [m.get_content().strip() for m in world.mails("sms@y.org")]
    assert [s.split(":")[0] for s in sms] == ["Escalated", "Reminder 1", "HELP cancelled"]
    assert all(len(s) <= 160 for s in sms), sms
    log = service.log()
    assert PASSWORD not in log
    assert "X-Token" not in log


async def test_silent_tracker_story(world: World) -> None:
    await world.start()
    await world.next_polls(2)
    now = world.now()
    for t in (now - 1.0, now - 0.5, now):
        world.bob.send("TRACK", t, 46.6, 8.0)
    await until(lambda: world.got("/rescue") == ["Silent"], what="Silent")
    world.bob.send("TRACK", world.now(), 46.61, 8.02)
    await until(lambda: world.got("/rescue") == ["Silent", "Back in contact"], what="back")
    await world.next_polls(3)

    assert world.got("/rescue") == ["Silent", "Back in contact"]
    assert world.got("/backup") == []
    silent = world.receiver.accepted("/rescue")[0]["message"]
    assert "Bob" in silent
    assert "46.60000, 8.00000" in silent


async def test_kill_during_sending_then_restart_delivers_everything(world: World) -> None:
    service = await world.start()
    await world.next_polls(2)
    world.receiver.hold("/rescue")  # this target's send will be in flight at the kill

    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: world.receiver.received("/rescue"), what="the send to /rescue")
    await until(lambda: len(world.mails("family@y.org")) == 1, what="the mail")
    await service.kill()
    world.receiver.release("/rescue")
    await world.start()
    await until(lambda: world.got("/rescue") == ["HELP"], what="HELP after restart")
    await world.next_polls(4)

    # The one target mid-send when killed got it again (at most once more); no other did.
    assert kinds(world.receiver.received("/rescue")) == ["HELP", "HELP"]
    assert [m["Subject"].split(":")[0] for m in world.mails("family@y.org")] == ["HELP"]
    assert world.got("/backup") == []


async def test_a_help_during_downtime_is_alerted_late_after_restart(world: World) -> None:
    service = await world.start()
    await world.next_polls(2)
    await service.kill()

    sent = world.now() - 20 * 60  # reached SPOT while the service was down, 20 min ago
    world.alice.send("HELP", sent, 46.5, 7.9)
    await world.start()
    await until(lambda: world.got("/rescue") == ["HELP (late)"], what="late HELP")

    body = world.receiver.accepted("/rescue")[0]["message"]
    assert "20 min ago" in body


async def test_limits_hold_across_kill_and_restart(world: World) -> None:
    other = world.sim.add_feed("0E2EFEED0000000000000002", "Hut")
    third = world.sim.add_feed("0E2EFEED0000000000000003", "Lodge")
    feeds = [world.feed, other, third]
    service = await world.start(feeds)
    await world.next_polls(4, third)
    await service.kill()
    await world.start(feeds)
    await world.next_polls(4, third)

    reqs = world.sim.requests
    gaps = [b.mono - a.mono for a, b in itertools.pairwise(reqs)]
    assert min(gaps) >= SPACING
    for feed in feeds:
        times = [r.mono for r in reqs if r.feed_id == feed.id]
        assert len(times) >= 8
        assert min(b - a for a, b in itertools.pairwise(times)) >= INTERVAL
    assert all(r.password_sent for r in reqs if r.feed_id == world.feed.id)


async def test_sighup_with_bad_rules_keeps_the_old_ones_and_tells_the_admins(
    world: World,
) -> None:
    service = await world.start()
    await world.next_polls(2)
    world.rules.write_text(RULES.replace("severity: critical", "severity: urgent"))

    service.signal(signal.SIGHUP)
    await until(lambda: world.got("/admin") == ["Rules rejected"], what="Rules rejected")
    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: world.got("/rescue") == ["HELP"], what="HELP under the old rules")

    assert "urgent" in world.receiver.accepted("/admin")[0]["message"]


async def test_sigterm_stops_cleanly(world: World) -> None:
    service = await world.start()
    await world.next_polls(2)

    service.signal(signal.SIGTERM)

    assert await service.wait(within=12) == 0
    assert "stopped" in service.log()


async def test_a_blocked_feed_is_told_to_the_admins_at_once(world: World) -> None:
    await world.start()
    await world.next_polls(1)

    world.feed.block()
    await until(lambda: world.got("/admin") == ["Feed blocked"], what="Feed blocked")
    polls = len([r for r in world.sim.requests if r.feed_id == world.feed.id])
    await asyncio.sleep(4 * INTERVAL)  # a blocked feed backs off for hours: no request

    assert len([r for r in world.sim.requests if r.feed_id == world.feed.id]) == polls
    assert "403" in world.receiver.accepted("/admin")[0]["message"]
