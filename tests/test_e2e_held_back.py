"""Nothing holds an alert back: the real `alerter run` against the simulator, tried as a
hostile tester would. Each test is one way a single bad thing used to stop everything
behind it (a refused message, a failing target or feed, an absurd message, a bad rule
file, a full disk, a password echoed back); each asserts the rest still goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_support import INTERVAL, PASSWORD, RULES, World, until

from alerter.models import Message
from alerter.sim import to_json, to_xml

if TYPE_CHECKING:
    from alerter.sim import SimDevice

#: Message ids for hand-made pages, far from the simulator's own.
RAW_ID = itertools.count(9_000_000_001)


def raw_message(dev: SimDevice, type_: str, at: float, lat: float, lon: float) -> Message:
    """A message the simulator does not serve by itself (it goes into a raw page)."""
    return Message(
        id=next(RAW_ID), messenger_id=dev.messenger_id, messenger_name=dev.name, unix_time=int(at),
        type=type_, latitude=lat, longitude=lon, altitude=0, battery="GOOD",
        date_time="2026-11-29T00:00:00+0000",
    )  # fmt: skip


def titles(world: World, path: str) -> list[str]:
    return [b["title"] for b in world.receiver.accepted(path)]


# -- 1: a target refuses one message forever ---------------------------------------------


async def test_a_message_one_target_refuses_never_holds_back_another_help(world: World) -> None:
    world.receiver.refuse("/rescue", "Alice", status=400)  # a chat API refusing one message
    await world.start()
    await world.next_polls(2)

    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: len(world.receiver.received("/rescue")) >= 1, what="Alice's HELP tried")
    world.bob.send("HELP", world.now(), 46.6, 7.8)

    await until(lambda: "HELP: Bob (Club)" in titles(world, "/rescue"), what="Bob's HELP")
    assert not any("Alice" in t for t in titles(world, "/rescue"))
    refused = [p for p in world.receiver.posts if p.path == "/rescue" and p.status == 400]
    assert refused
    assert all("Alice" in p.json["title"] for p in refused)


# -- 2: a target that failed is healthy again ---------------------------------------------


async def test_a_target_back_after_failures_gets_what_waited_at_once(world: World) -> None:
    world.receiver.fail("/rescue", 500)
    await world.start()
    await world.next_polls(2)

    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: len(world.receiver.received("/rescue")) >= 1, what="first try refused")
    world.receiver.recover("/rescue")  # its retry is 10 s away
    world.bob.send("HELP", world.now(), 46.6, 7.8)
    loop = asyncio.get_running_loop()
    start = loop.time()

    both = {"HELP: Alice (Club)", "HELP: Bob (Club)"}
    await until(lambda: both <= set(titles(world, "/rescue")), within=8, what="both HELPs")
    assert loop.time() - start < 8  # well before Alice's 10 s retry came round


# -- 3: SPOT fails a few times in a row ---------------------------------------------------


async def test_spot_failing_is_retried_at_the_floor_not_after_a_growing_backoff(
    world: World,
) -> None:
    await world.start()
    await world.next_polls(2)
    mark = len(world.sim.requests)
    world.feed.fail("500", times=5)
    await until(
        lambda: sum(r.outcome == "500" for r in world.sim.requests[mark:]) == 5, what="5 failures"
    )
    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: world.got("/rescue") == ["HELP"], what="HELP after SPOT recovered")

    ours = [r for r in world.sim.requests[mark:] if r.feed_id == world.feed.id]
    gaps = [b.mono - a.mono for a, b in itertools.pairwise(ours)]
    assert min(gaps) >= INTERVAL  # the limit holds
    assert max(gaps[:6]) < 2 * INTERVAL + 0.3  # no doubling: 5 failures, then data


# -- 4 and 5: one absurd message on a page beside a real HELP ------------------------------


@pytest.mark.parametrize(
    ("fmt", "absurd"),
    [
        pytest.param("xml", "time", id="xml-year-10000"),
        pytest.param("json", "time", id="json-year-10000"),
        pytest.param("json", "coordinate", id="json-huge-integer-latitude"),
        pytest.param("xml", "coordinate", id="xml-huge-integer-latitude"),
    ],
)
async def test_an_absurd_message_beside_a_help_holds_nothing_back(
    world: World, fmt: str, absurd: str
) -> None:
    now = world.now()
    bob = raw_message(world.bob, "HELP", now, 46.6, 7.8)
    odd = raw_message(world.alice, "HELP", now - 5, 12.345678, 7.9)
    serialize = to_json if fmt == "json" else to_xml
    body = serialize([bob, odd], feed_id=world.feed.id, feed_name=world.feed.name).decode()
    if absurd == "time":
        body = body.replace(str(odd.unix_time), "253402300800")  # 1 Jan 10000
    else:
        body = body.replace("12.345678", "1" + "0" * 308)
    assert body.count("253402300800" if absurd == "time" else "0" * 308) == 1
    await world.start(ALERTER_FEED_FORMAT=fmt)
    await world.next_polls(2)
    world.feed.serve_raw(body.encode(), times=10_000)  # every poll, again and again

    both = {"HELP: Alice (Club)", "HELP: Bob (Club)"}
    await until(lambda: both <= set(titles(world, "/rescue")), what="both HELPs")
    by_device = {b["title"]: b["message"] for b in world.receiver.accepted("/rescue")}
    alice = by_device["HELP: Alice (Club)"]
    if absurd == "time":
        assert "The device's time was unusable (it sent 253402300800)" in alice
        assert "Position: 12.34568, 7.90000" in alice
    else:
        assert "Position: no GPS fix" in alice
    assert "Position: 46.60000, 7.80000" in by_device["HELP: Bob (Club)"]


# -- 6 and 7: rules that would freeze or silence the service --------------------------------


def run_cli(world: World, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTER_")}
    env.update(
        ALERTER_FEEDS=json.dumps([{"id": world.feed.id, "password": PASSWORD}]),
        ALERTER_SPOT_BASE_URL=world.sim.base_url or "",
        ALERTER_POLL_INTERVAL=str(INTERVAL),
        ALERTER_FEED_SPACING="0.02",
        ALERTER_RULES=str(world.rules),
        ALERTER_APPRISE_CONFIG=str(world.apprise),
        ALERTER_STATE_DIR=str(world.root / "state"),
    )
    env.update(settings)
    return subprocess.run(  # noqa: PLW1510 (the exit status is asserted)
        [sys.executable, "-m", "alerter", *args],
        cwd=world.root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("repeat", ["0s", "0", "1ms", "0.1s"])
async def test_a_repeat_that_would_freeze_the_service_is_refused(world: World, repeat: str) -> None:
    world.rules.write_text(RULES.replace("repeat: 4s", f"repeat: {repeat}"))
    line = RULES.splitlines().index("    repeat: 4s") + 1

    check = run_cli(world, "check")
    run = run_cli(world, "run")

    assert check.returncode == 1
    assert f"{world.rules}:{line}:" in check.stderr
    assert "repeat" in check.stderr
    assert run.returncode == 2
    assert f"{world.rules}:{line}:" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("rules:\n" + "  " + "[" * 1000 + "]" * 1000 + "\n", id="1000-deep"),
        pytest.param(RULES.replace("repeat: 4s", "repeat: " + "9" * 5000), id="5000-digits"),
        pytest.param(RULES.replace("repeat: 4s", "repeat: " + "9" * 400 + "s"), id="400-digit-s"),
        pytest.param(RULES.replace("[HELP]", "[HLEP]"), id="typo-in-type"),
    ],
)
async def test_sighup_with_a_rule_file_that_breaks_the_loader_keeps_the_old_rules(
    world: World, bad: str
) -> None:
    service = await world.start()
    await world.next_polls(2)
    world.rules.write_text(bad)

    service.signal(signal.SIGHUP)
    await until(lambda: world.got("/admin") == ["Rules rejected"], what="Rules rejected")
    world.alice.send("HELP", world.now(), 46.5, 7.9)
    await until(lambda: world.got("/rescue") == ["HELP"], what="HELP under the old rules")

    assert service.proc is not None
    assert service.proc.returncode is None
    assert "Traceback" not in service.log()


# -- 8: a full state disk --------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, or a skip that says why it cannot be had here."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("needs mount(8) to make a small disk")
    made = subprocess.run(  # noqa: PLW1510
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


async def test_a_full_state_disk_is_told_directly_and_alerting_resumes_by_itself(
    world: World, small_disk: Path
) -> None:
    service = await world.start(ALERTER_STATE_DIR=str(small_disk / "state"))
    await world.next_polls(2)
    filler = fill(small_disk)
    # The WAL may still take a few writes in pages it already holds; the probe finds out.
    world.alice.send("TRACK", world.now(), 46.5, 7.9)
    await until(lambda: world.got("/admin") == ["State unwritable"], what="told directly")
    world.bob.send("HELP", world.now(), 46.6, 7.8)  # arrives while the service is blind
    await asyncio.sleep(3 * INTERVAL)

    filler.unlink()
    await until(lambda: "State recovered" in world.got("/admin"), what="recovered")
    await until(lambda: world.got("/rescue")[:1] == ["HELP"], what="Bob's HELP after all")

    assert world.got("/admin").count("State unwritable") == 1  # once, not every probe
    assert "disk is full" in world.receiver.accepted("/admin")[0]["message"]
    assert service.proc is not None
    assert service.proc.returncode is None


async def test_a_read_only_state_dir_is_one_clear_line_and_exit_2(world: World) -> None:
    state = world.root / "state"
    state.mkdir()
    (state / "alerter.lock").mkdir()  # cannot be opened as a file, even by root

    run = run_cli(world, "run")

    assert run.returncode == 2
    # After the version line at start, one clear line: no traceback.
    assert run.stderr.strip().splitlines()[-1].startswith("alerter: cannot use the state dir")
    assert "Traceback" not in run.stderr


# -- 9: the feed password echoed back by SPOT ---------------------------------------------


async def test_a_password_echoed_in_any_spelling_never_leaves(world: World) -> None:
    world.feed.password = PASSWORD_ODD
    world.feed.fail("echo", times=10_000)
    await world.start(ALERTER_FEED_FAILING_AFTER="1s")
    await until(lambda: world.got("/admin") == ["Feed failing"], what="Feed failing")
    status = run_cli(
        world, "status", ALERTER_FEEDS=json.dumps([{"id": world.feed.id, "password": "x"}])
    )
    db = sqlite3.connect(world.root / "state" / "alerter.db")
    stored = db.execute("SELECT last_error FROM feeds").fetchall()
    db.close()

    outputs = {
        "log": world.service.log() if world.service else "",
        "status": status.stdout + status.stderr,
        "notice": json.dumps(world.receiver.accepted("/admin")),
        "last_error": json.dumps(stored),
    }
    assert "E-0999" in outputs["last_error"]  # the echo did reach the stored error...
    for where, text in outputs.items():  # ...and no spelling of the password did
        for spelling in spellings(PASSWORD_ODD):
            assert spelling not in text, (where, spelling)


PASSWORD_ODD = 'p&ss+w0rd/Ühr"x<y>'


def spellings(secret: str) -> set[str]:
    """How the password may show: as sent, percent-encoded either way, escaped, or cut."""
    from urllib.parse import quote, quote_plus  # noqa: PLC0415

    forms = {
        secret, quote(secret, safe=""), quote_plus(secret), quote(secret, safe="").lower(),
        json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
    }  # fmt: skip
    fragments = {s[i : i + 6] for s in forms for i in range(len(s) - 5)}
    return forms | fragments
