"""The watcher: the pure scheduling decisions, then the whole watcher against the simulator.

The whole-watcher tests run real loopback HTTP on the system clock with sub-second
limits. SPOT's limits are checked as the simulator saw them (`SimRequest.mono`) and
are strict lower bounds; only "keeps pace" checks allow for scheduling jitter.
Nothing sleeps to wait for a result: `until` polls the store or the request log
against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alerter import watch
from alerter.clock import SystemClock
from alerter.models import PAGE_SIZE, FeedPage, Message
from alerter.settings import FeedConfig, Settings
from alerter.sim import SimDevice, SimFeed, SimRequest, Simulator
from alerter.spot.client import FeedClient
from alerter.store import Store
from alerter.watch import (
    LATE_OVERLAP,
    Cursor,
    Slot,
    Watcher,
    margin,
    next_kind,
    plan_next,
)

HOUR = 3600.0
INF = float("-inf")


# -- plan_next: pure --------------------------------------------------------------------


def slot(
    feed_id: str,
    last: float | None = None,
    not_before: float | None = None,
    busy: bool = False,
) -> Slot:
    return Slot(feed_id, last, not_before, busy)


IV, SP = 150.0, 2.0  # SPOT's own limits
MI, MS = margin(IV), margin(SP)


@pytest.mark.parametrize(
    ("slots", "last_any", "expected"),
    [
        pytest.param([], None, None, id="no-feeds"),
        pytest.param([slot("A", busy=True)], 10.0, None, id="all-busy"),
        pytest.param([slot("A")], None, ("A", INF), id="first-ever-request-at-once"),
        pytest.param([slot("A"), slot("B")], None, ("A", INF), id="tie-config-order"),
        pytest.param([slot("A")], 100.0, ("A", 100 + SP + MS), id="never-polled-waits-spacing"),
        pytest.param(
            [slot("A", 100.0), slot("B", 90.0)],
            100.0,
            ("B", 90 + IV + MI),
            id="earliest-due",
        ),
        pytest.param(
            [slot("A", 100.0), slot("B", 100.0)],
            100.0,
            ("A", 100 + IV + MI),
            id="tie-first",
        ),
        pytest.param(
            [slot("A", 100.0), slot("B", -60.0)],
            100.0,
            ("B", 100 + SP + MS),
            id="due-but-spacing-from-last-any",
        ),
        pytest.param(
            [slot("A", 200.0), slot("B", 0.0)],
            200.0,
            ("B", 200 + SP + MS),
            id="overdue-still-spaced",
        ),
        pytest.param(
            [slot("A", 0.0, busy=True), slot("B", 50.0)],
            60.0,
            ("B", 50 + IV + MI),
            id="busy-skipped-even-if-earlier",
        ),
        pytest.param(
            [slot("A", 100.0, not_before=500.0), slot("B", 200.0)],
            200.0,
            ("B", 200 + IV + MI),
            id="backoff-later-than-others",
        ),
        pytest.param(
            [slot("A", 100.0, not_before=120.0)],
            100.0,
            ("A", 100 + IV + MI),
            id="backoff-never-shortens-interval",
        ),
        pytest.param(
            [slot("A", 100.0, not_before=400.0)],
            100.0,
            ("A", 400.0),
            id="backoff-beyond-interval",
        ),
        pytest.param(
            [slot("A", None, not_before=9000.0), slot("B", 10.0)],
            10.0,
            ("B", 10 + IV + MI),
            id="blocked-before-first-request",
        ),
        pytest.param(
            [slot("A", 100.0, not_before=100 + IV + MI)],
            100 + IV + MI,
            ("A", 100 + IV + MI + SP + MS),
            id="spacing-after-own-request",
        ),
    ],
)
def test_plan_next(
    slots: list[Slot], last_any: float | None, expected: tuple[str, float] | None
) -> None:
    assert plan_next(slots, last_any, IV, SP) == expected


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(150.0, 0.75), (2.0, 0.01), (0.6, 0.003), (0.02, 0.0001), (1000.0, 5.0)],
)
def test_margin(limit: float, expected: float) -> None:
    assert margin(limit) == pytest.approx(expected)


def test_plan_next_never_closer_than_the_limits() -> None:
    """Whatever the slots, the planned time honours both limits from every past request."""
    for last_a, last_b, nb, last_any in itertools.product(
        (None, 0.0, 100.0, 149.0), (None, 50.0, 151.0), (None, 0.0, 300.0), (None, 151.0, 160.0)
    ):
        known = [t for t in (last_a, last_b) if t is not None]
        if last_any is None and known:
            continue  # last_any is the latest of the requests
        plan = plan_next([slot("A", last_a, nb), slot("B", last_b)], last_any, IV, SP)
        assert plan is not None
        feed, at = plan
        last = last_a if feed == "A" else last_b
        if last is not None:
            assert at - last > IV
        if last_any is not None:
            assert at - last_any > SP
        if feed == "A" and nb is not None:
            assert at >= nb


# -- next_kind: pure --------------------------------------------------------------------


def cursor(**kw: Any) -> Cursor:
    return Cursor(feed=FeedConfig(id="FEED1"), **kw)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param({}, ("page", None), id="fresh-page-first"),
        pytest.param({"sweep_start": 51}, ("page", None), id="restored-sweep-page-first"),
        pytest.param({"last_kind": "page"}, ("latest", None), id="latest-after-first-page"),
        pytest.param(
            {"last_kind": "page", "sweep_start": 51},
            ("latest", None),
            id="latest-before-sweep",
        ),
        pytest.param(
            {"last_kind": "latest", "need_latest": False}, ("page", None), id="then-pages"
        ),
        pytest.param(
            {"last_kind": "latest", "need_latest": False, "sweep_start": 51},
            ("sweep", 51),
            id="sweep-after-latest",
        ),
        pytest.param(
            {"last_kind": "page", "need_latest": False, "sweep_start": 101},
            ("sweep", 101),
            id="sweep-after-page",
        ),
        pytest.param(
            {"last_kind": "sweep", "need_latest": False, "sweep_start": 101},
            ("page", None),
            id="page-after-sweep",
        ),
        pytest.param(
            {"last_kind": "page", "need_latest": False},
            ("page", None),
            id="page-again",
        ),
    ],
)
def test_next_kind(state: dict[str, Any], expected: tuple[str, int | None]) -> None:
    assert next_kind(cursor(**state)) == expected


def test_next_kind_alternates_page_and_sweep() -> None:
    cur = cursor(last_kind="page", need_latest=False, sweep_start=51)
    seen = []
    for _ in range(6):
        kind, _start = next_kind(cur)
        seen.append(kind)
        cur.last_kind = kind
    assert seen == ["sweep", "page"] * 3


# -- the whole watcher over loopback ------------------------------------------------------

INTERVAL = 0.5
SPACING = 0.1


def now() -> float:
    return time.time()


def make_settings(
    base: str, state: Path, feeds: Iterable[str | dict[str, Any]], **kw: Any
) -> Settings:
    values: dict[str, Any] = {
        "poll_interval": INTERVAL,
        "feed_spacing": SPACING,
        "request_timeout": 0.3,
        "blocked_backoff": 30.0,
    }
    values.update(kw)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        feeds=[FeedConfig(id=f) if isinstance(f, str) else FeedConfig(**f) for f in feeds],
        spot_base_url=base,
        state_dir=state,
        **values,
    )


class Harness:
    """A simulator, one store and a way to start watchers on them."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession, state: Path) -> None:
        self.sim = sim
        self.session = session
        self.state = state
        self.settings: Settings | None = None
        self.store: Store | None = None

    def configure(self, feeds: Iterable[str | dict[str, Any]], **kw: Any) -> Settings:
        assert self.sim.base_url is not None
        self.settings = make_settings(self.sim.base_url, self.state, feeds, **kw)
        self.store = Store.open(self.settings.database)
        return self.settings

    def watcher(self) -> Watcher:
        assert self.settings is not None
        assert self.store is not None
        client = FeedClient(
            self.session, self.settings.spot_base_url, timeout=self.settings.request_timeout
        )
        return Watcher(self.settings, client, self.store, SystemClock())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Watcher]:
        """A new Watcher (as after a restart), running until the block ends."""
        w = self.watcher()
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        self.task = task
        try:
            yield w
        finally:
            stop.set()
            # run() must notice `stop` at once, however far its next request lies.
            await asyncio.wait_for(task, 2.0)

    async def until(self, cond: Callable[[], bool], what: str, within: float = 8.0) -> None:
        """Poll `cond` until true; fail after `within` seconds or if the watcher died."""
        deadline = time.monotonic() + within
        while not cond():
            if self.task.done():
                raise AssertionError(f"the watcher ended while waiting for {what}: {self.task}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}")
            await asyncio.sleep(0.01)

    # -- looking at the result

    @property
    def db(self) -> Store:
        assert self.store is not None
        return self.store

    def stored(self, msgs: Iterable[Message]) -> bool:
        ids = [m.id for m in msgs]
        return len(self.db.messages_by_id(ids)) == len(set(ids))

    def requests(self, feed_id: str | None = None, since: int = 0) -> list[SimRequest]:
        return [r for r in self.sim.requests[since:] if feed_id is None or r.feed_id == feed_id]

    def synced(self, feed_id: str) -> bool:
        st = self.db.feed_states().get(feed_id)
        return st is not None and st.synced_at is not None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SystemClock()) as sim:
        yield sim


@pytest.fixture
def h(sim: Simulator, session: aiohttp.ClientSession, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(sim, session, tmp_path / "state")
    yield harness
    if harness.store is not None:
        harness.store.close()


def device(sim: Simulator, feed_id: str, messenger: str = "0-1") -> SimDevice:
    feed = sim.feeds.get(feed_id) or sim.add_feed(feed_id, f"Feed {feed_id}")
    return feed.add_device(messenger, f"Dev {messenger}")


def assert_limits(reqs: Sequence[SimRequest], interval: float, spacing: float) -> None:
    """SPOT's limits, as the server saw them: strict, no tolerance."""
    ordered = sorted(reqs, key=lambda r: r.mono)
    for a, b in itertools.pairwise(ordered):
        assert b.mono - a.mono >= spacing, (
            f"{a.feed_id} {a.endpoint} start={a.start} and {b.feed_id} {b.endpoint} "
            f"start={b.start} only {b.mono - a.mono:.4f}s apart (spacing {spacing})"
        )
    by_feed: dict[str, list[SimRequest]] = defaultdict(list)
    for r in ordered:
        by_feed[r.feed_id].append(r)
    for feed_id, rs in by_feed.items():
        for a, b in itertools.pairwise(rs):
            assert b.mono - a.mono >= interval, (
                f"{feed_id}: {a.endpoint} start={a.start} and {b.endpoint} start={b.start} "
                f"only {b.mono - a.mono:.4f}s apart (interval {interval})"
            )


def gaps(reqs: Sequence[SimRequest]) -> list[float]:
    return [b.mono - a.mono for a, b in itertools.pairwise(reqs)]


async def test_three_feeds_limits_and_pace_across_restart(h: Harness, sim: Simulator) -> None:
    ids = ["FEEDA", "FEEDB", "FEEDC"]
    t = now()
    device(sim, "FEEDA").track(t - 2 * HOUR, 60, 70)  # more than a page: sweeps count too
    device(sim, "FEEDB").track(t - HOUR, 300, 5)
    device(sim, "FEEDC").send("OK", t - 60, 46.0, 7.0)
    interval, spacing = 0.6, 0.1
    h.configure(ids, poll_interval=interval, feed_spacing=spacing)

    async with h.running():
        await h.until(lambda: all(len(h.requests(f)) >= 5 for f in ids), "5 requests per feed")
    split = len(sim.requests)
    async with h.running():  # a new watcher, at once, on the same state
        await h.until(
            lambda: all(len(h.requests(f, split)) >= 3 for f in ids), "3 more requests per feed"
        )

    reqs = list(sim.requests)
    assert {r.outcome for r in reqs} == {"data"}
    # Every endpoint is counted: pages, latest (once per start) and sweep pages.
    assert [r.endpoint for r in h.requests("FEEDA")].count("latest") == 2
    assert any(r.start == 51 for r in h.requests("FEEDA"))
    assert_limits(reqs, interval, spacing)
    for f in ids:
        before = [r for r in sim.requests[:split] if r.feed_id == f]
        after = h.requests(f, split)
        assert after[0].mono - before[-1].mono >= interval  # across the restart too
        # As close to the limit as it allows: lateness is detection delay.
        median = statistics.median(gaps(h.requests(f)))
        assert interval <= median <= interval * 1.1, (f, median)
    assert sum(h.db.message_counts().values()) == 70 + 5 + 1


class SlowSetupClient(FeedClient):
    """Some requests reach SPOT late: a fresh connection's TCP and TLS handshakes first."""

    def __init__(self, *a: Any, slow: Callable[[str, int], float], **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.slow = slow
        self.calls: dict[str, int] = defaultdict(int)

    async def fetch(self, feed: FeedConfig, *a: Any, **kw: Any) -> FeedPage:
        n = self.calls[feed.id]
        self.calls[feed.id] += 1
        await asyncio.sleep(self.slow(feed.id, n))
        return await super().fetch(feed, *a, **kw)


async def test_limits_hold_when_a_request_reaches_spot_late(h: Harness, sim: Simulator) -> None:
    ids = ["FEEDA", "FEEDB"]
    for f in ids:
        device(sim, f).send("OK", now() - 60, 46.0, 7.0)
    settings = h.configure(ids)
    # Every other request of FEEDA takes 60 ms to reach the simulator (less than the
    # spacing): counted from sending alone, the next request would come too close.
    client = SlowSetupClient(
        h.session, settings.spot_base_url, timeout=0.3,
        slow=lambda f, n: 0.06 if f == "FEEDA" and n % 2 == 0 else 0.0,
    )  # fmt: skip
    w = Watcher(settings, client, h.db, SystemClock())
    stop = asyncio.Event()
    h.task = asyncio.create_task(w.run(stop))
    await h.until(lambda: all(len(h.requests(f)) >= 5 for f in ids), "5 requests per feed")
    stop.set()
    await asyncio.wait_for(h.task, 2.0)
    assert_limits(sim.requests, INTERVAL, SPACING)


async def test_120_messages_between_two_polls_are_paged_in(h: Harness, sim: Simulator) -> None:
    dev = device(sim, "FEED1")
    t = now()
    history = dev.track(t - 3 * HOUR, 600, 3)
    h.configure(["FEED1"])
    async with h.running():
        await h.until(
            lambda: h.synced("FEED1") and any(r.endpoint == "latest" for r in sim.requests),
            "first sync",
        )
        assert h.stored(history)
        mark = len(sim.requests)
        burst = dev.track(now() - 120 * 20, 20, 120)  # all visible before the next poll
        await h.until(lambda: h.stored(burst), "all 120 new messages stored")
    after = h.requests("FEED1", mark)
    assert (after[0].endpoint, after[0].start) == ("message", None)
    starts = [r.start for r in after]
    assert 51 in starts
    assert 101 in starts
    assert starts.index(51) < starts.index(101)
    assert sum(h.db.message_counts().values()) == 123
    fresh = h.db.messages_by_id(m.id for m in burst)
    assert not any(r.initial for r in fresh.values())
    assert_limits(sim.requests, INTERVAL, SPACING)


async def test_downtime_messages_are_fetched_after_restart(h: Harness, sim: Simulator) -> None:
    dev = device(sim, "FEED1")
    t = now()
    # 120 old messages (3 to 5 h ago); a 4 h look-back reads the first 100 at first start.
    dev.track(t - 5 * HOUR, 60, 120)
    h.configure(["FEED1"], first_start_lookback="4h")
    async with h.running():
        await h.until(lambda: h.synced("FEED1"), "first sync")
    assert sum(h.db.message_counts().values()) == 100
    assert all(r.message.unix_time < t - 3 * HOUR + 1 for r in h.db.pending())

    # Down: 70 messages arrive (more than a page).
    downtime = dev.track(now() - 70 * 10, 10, 70)
    split = len(sim.requests)
    async with h.running():
        await h.until(lambda: h.stored(downtime), "the downtime messages stored")
        await h.until(lambda: len(h.requests("FEED1", split)) >= 5, "a few more polls")
    after = h.requests("FEED1", split)
    assert after[0].start is None
    assert any(r.start == 51 for r in after)
    # The feed holds 190 messages, but paging back stopped at messages known before.
    assert all(r.start is None or r.start <= 51 for r in after), [r.start for r in after]
    got = h.db.messages_by_id(m.id for m in downtime)
    assert not any(r.initial for r in got.values())  # news, to be alerted late
    assert sum(h.db.message_counts().values()) == 170
    assert_limits(sim.requests, INTERVAL, SPACING)


TRANSIENT = ["500", "503", "hang", "truncated", "html", "garbage"]
CONFIG = ["notfound", "password"]


async def test_each_fault_is_survived_recorded_backed_off_and_recovered(
    h: Harness, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_retry = 1.2
    monkeypatch.setattr(watch, "CONFIG_FAULT_RETRY", config_retry)
    kinds = [*TRANSIENT, *CONFIG, "empty"]
    feed_of = {k: f"F{k}" for k in kinds}
    devices = {k: device(sim, feed_of[k]) for k in kinds}
    control = device(sim, "FOK")
    t = now()
    for d in [*devices.values(), control]:
        d.send("OK", t - HOUR, 46.0, 7.0)
    interval, spacing, timeout = 0.8, 0.06, 0.3
    h.configure([*feed_of.values(), "FOK"], poll_interval=interval, feed_spacing=spacing,
                request_timeout=timeout)  # fmt: skip

    async with h.running():
        await h.until(
            lambda: all(h.synced(f) for f in [*feed_of.values(), "FOK"]), "every feed synced"
        )
        mark = len(sim.requests)
        new: dict[str, Message] = {}
        for k, d in devices.items():
            d.feed.fail(k, times=2)
            new[k] = d.send("HELP", now(), 46.1, 7.1)
        seen_kinds: dict[str, set[str]] = defaultdict(set)
        most_failures: dict[str, int] = defaultdict(int)

        def watch_states() -> bool:
            for fid, st in h.db.feed_states().items():
                if st.error_kind is not None:
                    seen_kinds[fid].add(st.error_kind)
                    # The backoff is stored with the failure.
                    assert st.not_before is not None
                    assert st.last_failure is not None
                    assert st.not_before >= st.last_failure + interval
                most_failures[fid] = max(most_failures[fid], st.failures)
            return h.stored(new.values())

        await h.until(watch_states, "every feed recovered", within=15)
        assert not h.task.done()  # kept running throughout

    states = h.db.feed_states()
    for k in kinds:
        fid = feed_of[k]
        reqs = h.requests(fid, mark)
        assert [r.outcome for r in reqs[:3]] == [k, k, "data"], (k, [r.outcome for r in reqs])
        first, second, third = (r.mono for r in reqs[:3])
        st = states[fid]
        assert (st.failures, st.error_kind, st.not_before) == (0, None, None), k
        if k == "empty":
            # "No messages" is no failure: nothing recorded, normal pace.
            assert most_failures[fid] == 0
            assert seen_kinds[fid] == set()
            continue
        expected = "config" if k in CONFIG else "unavailable"
        assert seen_kinds[fid] == {expected}, k
        assert most_failures[fid] == 2, k
        took = timeout if k == "hang" else 0.0
        if k in CONFIG:
            assert second - first >= took + config_retry, k
            assert third - second >= took + config_retry, k
        else:
            # At the floor: one interval after each failure, never growing (a HELP
            # after an outage must not wait for a doubled backoff).
            assert second - first >= took + interval, k
            assert third - second >= took + interval, k
            assert third - second < took + 2 * interval, k
        assert st.last_success is not None
        assert st.last_failure is not None
        assert st.last_success > st.last_failure
    # The healthy feed was never held back by the others' faults.
    ok = h.requests("FOK", mark)
    assert len(ok) >= 3
    assert {r.outcome for r in ok} == {"data"}
    assert states["FOK"].failures == 0
    assert_limits(sim.requests, interval, spacing)


async def test_403_backs_off_hard_and_others_keep_pace(h: Harness, sim: Simulator) -> None:
    ids = ["BLOCKED", "FEEDA", "FEEDB"]
    for f in ids:
        device(sim, f).send("OK", now() - 60, 46.0, 7.0)
    interval = 0.6
    h.configure(ids, poll_interval=interval, blocked_backoff=30.0)

    async with h.running():
        await h.until(lambda: all(h.synced(f) for f in ids), "every feed synced")
        sim.feeds["BLOCKED"].block()
        await h.until(
            lambda: any(r.outcome == "blocked" for r in sim.requests), "a request answered 403"
        )
        blocked_at = now()
        mark = len(sim.requests)
        await h.until(
            lambda: all(len(h.requests(f, mark)) >= 3 for f in ("FEEDA", "FEEDB")),
            "the other feeds polled on",
        )
    st = h.db.feed_states()["BLOCKED"]
    assert (st.error_kind, st.failures) == ("blocked", 1)
    assert st.last_failure is not None
    assert st.not_before is not None
    assert st.not_before - st.last_failure == pytest.approx(30.0)
    assert abs(st.last_failure - blocked_at) < 1.0

    split = len(sim.requests)
    async with h.running():  # the block holds across a restart
        await h.until(
            lambda: all(len(h.requests(f, split)) >= 3 for f in ("FEEDA", "FEEDB")),
            "the other feeds polled on after the restart",
        )
    assert [r.outcome for r in h.requests("BLOCKED")].count("blocked") == 1
    assert h.requests("BLOCKED")[-1].outcome == "blocked"  # nothing after the 403
    for f in ("FEEDA", "FEEDB"):
        rs = [r for r in h.requests(f) if r.mono >= h.requests("BLOCKED")[-1].mono]
        assert {r.outcome for r in rs} == {"data"}
        median = statistics.median(gaps(rs))
        assert interval <= median <= interval * 1.1, (f, median)
    assert_limits(sim.requests, interval, SPACING)


def malformed(feed: SimFeed, at: float, type: str = "HELP") -> Message:
    """A message the parser must skip: no messengerId."""
    m = Message(id=feed.sim.next_id(), messenger_id="", messenger_name="", unix_time=int(at),
                type=type, latitude=46.0, longitude=7.0)  # fmt: skip
    feed.schedule(m, at)
    return m


async def test_malformed_messages_are_skipped_and_the_rest_stored(
    h: Harness, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    dev = device(sim, "FEED1")
    t = now() - HOUR
    good: list[Message] = []
    bad: list[Message] = []
    for i in range(130):
        at = t + i * 10
        # One bad message on the first page and one on the second (newest first).
        if i in (130 - 20, 130 - 70):
            bad.append(malformed(dev.feed, at))
        else:
            good.append(dev.send("TRACK", at, 46.0 + i / 1000, 7.0))
    h.configure(["FEED1"])
    async with h.running():
        await h.until(lambda: h.stored(good), "every good message stored")
        await h.until(lambda: h.synced("FEED1"), "synced")
    assert sum(h.db.message_counts().values()) == 128
    assert h.db.messages_by_id(m.id for m in bad) == {}
    assert [r.start for r in h.requests("FEED1") if r.start] == [51, 101]
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) >= 2
    assert any("HELP" in r.getMessage() for r in skipped)


async def test_first_start_marks_history_initial_and_later_news_not(
    h: Harness, sim: Simulator
) -> None:
    dev = device(sim, "FEED1")
    t = now()
    history = [dev.send("HELP", t - 2 * HOUR, 46.0, 7.0), *dev.track(t - HOUR, 300, 4)]
    h.configure(["FEED1"])
    async with h.running():
        await h.until(lambda: h.synced("FEED1"), "first sync")
        assert h.stored(history)
        assert h.db.feed_states()["FEED1"].synced_at is not None
        news = dev.send("HELP", now(), 46.2, 7.2)
        await h.until(lambda: h.stored([news]), "the new HELP stored")
    got = h.db.messages_by_id([m.id for m in history] + [news.id])
    assert all(got[m.id].initial for m in history)
    assert got[news.id].initial is False


async def test_first_start_with_a_full_page_is_initial_until_the_sweep_ends(
    h: Harness, sim: Simulator
) -> None:
    dev = device(sim, "FEED1")
    history = dev.track(now() - 2 * HOUR, 60, 80)
    h.configure(["FEED1"])
    async with h.running():
        await h.until(lambda: h.synced("FEED1"), "first sync")
        assert h.stored(history)
        news = dev.send("TRACK", now(), 46.2, 7.2)
        await h.until(lambda: h.stored([news]), "the next message stored")
    got = h.db.messages_by_id(m.id for m in history)
    assert all(r.initial for r in got.values())
    assert h.db.messages_by_id([news.id])[news.id].initial is False


async def test_killed_during_first_sync_still_reads_the_history(h: Harness, sim: Simulator) -> None:
    dev = device(sim, "FEED1")
    history = dev.track(now() - 3 * HOUR, 60, 120)  # within the 6 h look-back
    h.configure(["FEED1"])
    w = h.watcher()
    task = asyncio.create_task(w.run())
    h.task = task
    await h.until(lambda: sum(h.db.message_counts().values()) >= PAGE_SIZE, "page 1 stored")
    task.cancel()  # as good as kill -9 for the watcher's state: page 1 stored, nothing more
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not h.synced("FEED1")
    assert sum(h.db.message_counts().values()) == PAGE_SIZE

    async with h.running():
        await h.until(lambda: h.stored(history), "the whole history stored", within=6)
        await h.until(lambda: h.synced("FEED1"), "synced")
    assert all(r.initial for r in h.db.messages_by_id(m.id for m in history).values())
    assert_limits(sim.requests, INTERVAL, SPACING)


async def test_killed_during_catch_up_resumes_paging_back(h: Harness, sim: Simulator) -> None:
    dev = device(sim, "FEED1")
    t = now()
    old = dev.track(t - 20 * HOUR, 60, 30)
    h.configure(["FEED1"], first_start_lookback="24h")
    async with h.running():
        await h.until(lambda: h.synced("FEED1"), "first sync")
    assert h.stored(old)

    # Down for 10 h with a device tracking every 5 min: page 1 reaches back past the
    # late-arrival overlap, so only the catch-up sweep can find the rest.
    downtime = dev.track(now() - 10 * HOUR, 300, 120)
    assert downtime[-PAGE_SIZE].unix_time < now() - LATE_OVERLAP
    w = h.watcher()
    task = asyncio.create_task(w.run())
    h.task = task
    await h.until(lambda: sum(h.db.message_counts().values()) >= 30 + PAGE_SIZE, "page 1 stored")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sum(h.db.message_counts().values()) == 30 + PAGE_SIZE

    async with h.running():
        await h.until(lambda: h.stored(downtime), "every downtime message stored", within=6)
    assert_limits(sim.requests, INTERVAL, SPACING)


async def test_stop_ends_run_promptly_while_waiting_long(h: Harness, sim: Simulator) -> None:
    device(sim, "FEED1").send("OK", now() - 60, 46.0, 7.0)
    h.configure(["FEED1"], poll_interval=60.0)
    async with h.running():
        await h.until(lambda: h.synced("FEED1"), "first poll")
        began = time.monotonic()
    # running() waited for run() to return, with a 2 s cap; the next poll was a minute away.
    assert time.monotonic() - began < 1.0
    assert len(sim.requests) == 1


async def test_unexpected_error_is_logged_and_the_watch_goes_on(
    h: Harness, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = device(sim, "FEED1")
    dev.send("OK", now() - 60, 46.0, 7.0)
    h.configure(["FEED1"])
    real = Store.insert_messages
    calls = {"n": 0}

    def flaky(self: Store, *a: Any, **kw: Any) -> list[Message]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("a bug")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "insert_messages", flaky)
    async with h.running():
        await h.until(lambda: sum(h.db.message_counts().values()) == 1, "stored on the next try")
        assert h.db.feed_states()["FEED1"].failures == 0
    # The first answer could not be stored: it counted as a failure and was retried.
    assert calls["n"] >= 2
    assert len(h.requests("FEED1")) >= 2


# -- a step of the system clock -------------------------------------------------------------


class SteppingClock:
    """Wall time that an NTP step can move; monotonic time that only sleeping moves."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 500.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.wall += max(0.0, seconds)
        self.mono += max(0.0, seconds)
        await asyncio.sleep(0)


class RecordingSource:
    """A FeedSource answering empty pages; steps the wall clock after the first request."""

    def __init__(self, clock: SteppingClock, step: float) -> None:
        self.clock = clock
        self.step = step
        self.at: list[float] = []  # monotonic time of each request

    async def fetch(
        self, feed: FeedConfig, endpoint: str = "message", *, start: int | None = None
    ) -> FeedPage:
        self.at.append(self.clock.mono)
        if len(self.at) == 1:
            self.clock.wall += self.step  # NTP steps the system clock forward
        return FeedPage()


@pytest.mark.parametrize("step", [1000.0, -1000.0])
async def test_a_step_of_the_system_clock_never_brings_a_request_early(
    tmp_path: Path, step: float
) -> None:
    settings = make_settings(
        "https://api.findmespot.com/spot-main-web/consumer/rest-api/2.0/public/feed",
        tmp_path, ["FEED1"], poll_interval=150.0, feed_spacing=2.0,
    )  # fmt: skip
    clock = SteppingClock()
    source = RecordingSource(clock, step)
    store = Store.open(settings.database)
    watcher = Watcher(settings, source, store, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        for _ in range(200):
            if len(source.at) >= 4:
                break
            await asyncio.sleep(0)
    finally:
        stop.set()
        await task
        store.close()

    gaps = [b - a for a, b in itertools.pairwise(source.at)]
    assert len(gaps) >= 3
    assert min(gaps) >= 150.0  # counted on the clock no step can move
    assert max(gaps) < 151.0  # and a backward step does not stall polling either
