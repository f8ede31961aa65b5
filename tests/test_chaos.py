"""Chaos: the real `alerter run`, killed with SIGKILL at 20 seeded random moments while
HELPs keep arriving (some while it is down), a receiver that goes down and up, and one
message a target always refuses. No HELP may be missed, at most one duplicate per kill,
and SPOT's limits hold across every restart. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

from e2e_support import INTERVAL, SPACING, World, until

KILLS = 20
SEED = 20261129

CHAOS_RULES = """\
rules:
  - name: help
    when: {type: [HELP]}
    notify: [rescue, rescue-backup]
    severity: critical
    repeat: off
    updates: off
"""


async def test_twenty_kills_lose_no_help_and_break_no_limit(world: World) -> None:
    rng = random.Random(SEED)
    world.rules.write_text(CHAOS_RULES)
    world.receiver.refuse("/rescue", "Refused")  # this one message, for ever
    devices = iter(world.feed.add_device(f"0-77{n:05d}", f"Dev{n:02d}") for n in itertools.count())
    refused = world.feed.add_device("0-7799999", "Refused")
    sent: list[str] = []

    def send_help() -> None:
        dev = next(devices)
        dev.send("HELP", world.now(), 46.0 + rng.random(), 7.0 + rng.random())
        sent.append(dev.name)

    service = await world.start()
    await world.next_polls(2)  # history read: what comes next is news
    refused.send("HELP", world.now(), 46.5, 7.5)
    down_while_dead = 0
    for _kill in range(KILLS):
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            send_help()
            if rng.random() < 0.3:  # the receiver goes down, or comes back
                if "/rescue" in world.receiver.statuses:
                    world.receiver.recover("/rescue")
                else:
                    world.receiver.fail("/rescue", 503)
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        await service.kill()
        if rng.random() < 0.5:  # a HELP while the service is down
            send_help()
            down_while_dead += 1
        service = await world.start()
    world.receiver.recover("/rescue")
    send_help()  # a target that accepts anything gets what waited for it at once

    def heard(path: str) -> Counter[str]:
        return Counter(t.split(": ")[1].split(" (")[0] for t in titles(world, path))

    everyone = set(sent)
    await until(lambda: everyone <= set(heard("/rescue")), within=90, what="every HELP")
    await until(lambda: everyone | {"Refused"} <= set(heard("/backup")), within=30)
    await world.next_polls(3)
    await service.kill()  # the state is checked as it was, not after a clean stop

    rescue, backup = heard("/rescue"), heard("/backup")
    duplicates = sum(n - 1 for n in rescue.values()) + sum(n - 1 for n in backup.values())
    reqs = world.sim.requests
    gaps = [b.mono - a.mono for a, b in itertools.pairwise(reqs)]
    feed_gaps = [
        b.mono - a.mono
        for a, b in itertools.pairwise(r for r in reqs if r.feed_id == world.feed.id)
    ]
    print(
        f"\nchaos (seed {SEED}): {KILLS} kills, {len(sent)} HELPs ({down_while_dead} while "
        f"down) + 1 always refused by /rescue; missed: {len(everyone - set(rescue))} at "
        f"/rescue, {len(everyone - set(backup))} at /backup; duplicates: {duplicates}; "
        f"{len(reqs)} requests, closest {min(gaps):.3f}s (limit {SPACING}s), closest for "
        f"the feed {min(feed_gaps):.3f}s (limit {INTERVAL}s)"
    )
    assert everyone <= set(rescue)
    assert everyone | {"Refused"} <= set(backup)
    assert "Refused" not in rescue
    assert duplicates <= KILLS
    assert min(gaps) >= SPACING
    assert min(feed_gaps) >= INTERVAL


def titles(world: World, path: str) -> list[str]:
    return [b["title"] for b in world.receiver.accepted(path) if b["title"].startswith("HELP")]
