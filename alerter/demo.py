"""`alerter demo`: the whole service against the built-in simulator, on a fast clock.

The story (times from the start, simulated): Alice, tracking, presses HELP at +2 min,
repeats it at +7 and +14 min (an update with her new position), then her device goes
quiet: nobody acknowledges, so the backup contact is alerted at about +22 min and the
rescue contacts are reminded; she cancels at +33 min. Bob's tracker stops at +10 min;
after 30 min of silence it is reported `Silent`, and `Back in contact` when it is heard
again at +43 min. Alerts reach the terminal through the same Apprise fan-out as real
targets, via a `console://` scheme registered here.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

from apprise.decorators import notify as apprise_notify

from alerter.clock import ScaledClock
from alerter.config import load_config
from alerter.service import Service
from alerter.settings import FeedConfig, Settings
from alerter.sim import Simulator
from alerter.store import Store

MINUTE = 60.0
#: The story ends with this alert; the demo stops shortly after it.
LAST_KIND = "Back in contact"
#: Simulated minutes after which the demo stops whatever happened.
DEADLINE_MINUTES = 55.0

# The demo's own rules (the same values as the shipped rules/default.yml), so that an
# admin's edits to rules/ cannot change the story.
DEMO_RULES = """\
rules:
  - name: help
    when: {type: [HELP]}
    notify: [rescue]
    severity: critical
    repeat: 15m
    updates: 10m
    escalate:
      - after: 20m
        notify: [rescue-backup]
  - name: help-cancel
    when: {type: [HELP-CANCEL]}
    resolves: help
    notify: [rescue]
  - name: stale-track
    when:
      silent_for: {times_usual_gap: 3, at_least: 30m}
      tracking: [TRACK, EXTREME-TRACK, UNLIMITED-TRACK, NEWMOVEMENT]
    notify: [rescue]
    severity: warning
  - name: stop
    when: {type: [STOP, POWER-OFF]}
    resolves: stale-track
    notify: []
  - name: unknown-type
    when: {type: unknown}
    notify: [rescue]
    severity: critical
  - name: low-battery
    when: {battery: LOW}
    notify: [rescue]
    severity: info
    repeat: off
"""

DEMO_TARGETS = """\
urls:
  - console://rescue-team:
      tag: rescue
  - console://backup-phone:
      tag: rescue-backup, sms
  - console://admins:
      tag: admin
"""


class _Console:
    """Where the console:// scheme prints, and what it printed."""

    out: TextIO = sys.stdout
    clock: ScaledClock | None = None
    t0: float = 0.0
    seen: list[str] = []  # noqa: RUF012 (one demo per process)
    lock = threading.Lock()


@apprise_notify(on="console", name="Console (demo)")  # type: ignore[untyped-decorator,no-untyped-call]
def _console(
    body: str, title: str, notify_type: str, meta: dict[str, Any], *_: Any, **__: Any
) -> bool:
    """Print an alert the way a phone would show it."""
    clock = _Console.clock
    offset = (clock.now() - _Console.t0) / MINUTE if clock else 0.0
    target = meta.get("host", "console")
    lines = [f"\n[+{offset:4.1f} min] to {target}:"]
    if title:
        lines.append(f"  ** {title} **")
    lines += [f"  {line}" for line in body.splitlines()]
    # Targets are sent to in parallel threads: one write per alert keeps them apart.
    with _Console.lock:
        _Console.seen.append(title or body.split(":", maxsplit=1)[0])
        print("\n".join(lines), file=_Console.out, flush=True)
    return True


def script_story(sim: Simulator, t0: float) -> None:
    """Alice's HELP and Bob's silence, scripted on the simulator."""
    club = sim.add_feed("0DemoClubFeed0000000000000000000", name="Alpine Club")
    alice = club.add_device("0-4200001", "Alice", model="SPOT3")
    bob = club.add_device("0-4200002", "Bob", model="SPOTTRACE")
    alice.track(start=t0 - 60 * MINUTE, every=10 * MINUTE, count=6, lat=46.5402, lon=7.9690)
    text = "Fell on the ridge, ankle broken"
    alice.send("HELP", t0 + 2 * MINUTE, 46.55712, 7.99213, content=text)
    alice.send("HELP", t0 + 7 * MINUTE, 46.55731, 7.99240, content=text)
    alice.send("HELP", t0 + 14 * MINUTE, 46.55748, 7.99262, battery="LOW", content=text)
    alice.send("HELP-CANCEL", t0 + 33 * MINUTE, content="The help message has been cancelled")
    bob.track(start=t0 - 60 * MINUTE, every=5 * MINUTE, count=15, lat=46.6012, lon=8.0105)
    bob.send("TRACK", t0 + 43 * MINUTE, 46.63120, 8.04510)


async def run_demo(speed: float = 75.0, out: TextIO = sys.stdout) -> int:
    """Play the story; returns 0 when every kind of alert in it was shown."""
    clock = ScaledClock(speed)
    t0 = clock.now()
    _Console.out, _Console.clock, _Console.t0, _Console.seen = out, clock, t0, []
    print(
        f"spot-alerter demo: a simulated SPOT feed on a clock {speed:g}x faster than real "
        f"time (about {DEADLINE_MINUTES * MINUTE / speed:.0f} s). Alice presses HELP at "
        "+2 min and cancels at +33; Bob's tracker goes quiet at +10 min and is heard again "
        "at +43.",
        file=out,
    )
    sim = Simulator(clock)
    script_story(sim, t0)
    with tempfile.TemporaryDirectory(prefix="alerter-demo-") as tmp:
        root = Path(tmp)
        (root / "rules.yml").write_text(DEMO_RULES)
        (root / "apprise.yml").write_text(DEMO_TARGETS)
        base = await sim.start()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            feeds=[FeedConfig(id=fid, name=f.name) for fid, f in sim.feeds.items()],
            spot_base_url=base,
            rules=root / "rules.yml",
            apprise_config=root / "apprise.yml",
            state_dir=root / "state",
            timezone="Europe/Zurich",
            request_timeout=5,
            http_listen="",  # the demo serves no web page; never take the service's port
        )
        store = Store.open(settings.database)
        service = Service(settings, load_config(settings), store, clock=clock)
        task = asyncio.create_task(service.run(handle_signals=False))
        try:
            while clock.now() < t0 + DEADLINE_MINUTES * MINUTE and not task.done():
                if any(s.startswith(LAST_KIND) for s in _Console.seen):
                    await clock.sleep(MINUTE)
                    break
                await clock.sleep(MINUTE / 2)
        finally:
            service.stop()
            await task
            await sim.stop()
            store.close()
    kinds = ["HELP:", "HELP update", "Escalated", "Reminder", "HELP cancelled", "Silent",
             LAST_KIND]  # fmt: skip
    missing = [k for k in kinds if not any(s.startswith(k) for s in _Console.seen)]
    print(
        f"\ndemo over: {len(_Console.seen)} alerts, {len(sim.requests)} requests to the "
        "simulated SPOT feed.",
        file=out,
    )
    if missing:
        print(f"missing from the story: {', '.join(missing)}", file=out)
        return 1
    return 0
