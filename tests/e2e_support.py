"""The real `alerter run` process, the simulator and the receivers, wired for the
whole-service tests (`test_e2e*.py`); the `world` fixture lives in conftest.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    async def start(self, feeds: list[SimFeed] | None = None, **settings: str) -> Alerter:
        """Start `alerter run`; `settings` add or override ALERTER_* variables."""
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
            ALERTER_HTTP_LISTEN="off",  # off unless a test asks: never the default port
        )
        env.update(settings)
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
