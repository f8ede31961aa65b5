"""The real `alerter run` process against the local SPOT simulator and local receivers.

Each test starts `python -m alerter run` with short intervals, scripts devices on the
simulator, and checks exactly what each target received, in order. The process is
stopped with SIGTERM, killed with SIGKILL and restarted, and reloaded with SIGHUP.
Nothing sleeps to wait for a rule: every wait polls for an outcome with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import signal

from e2e_support import INTERVAL, PASSWORD, RULES, SPACING, World, kinds, until


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
