"""Benchmarks, run by hand (`make bench`); the figures go into the README.

1. Parse a 50-message XML page and a JSON page; store a 50-message page (SQLite file).
2. The real `alerter run` process watching 75 feeds of the local simulator at a 1.5 s
   interval and 0.02 s spacing: the achieved per-feed interval and every violation of
   either limit, as the simulator saw the requests; the process's peak RSS.
3. During that run, HELPs appear on random feeds: the time from the simulator answering
   the poll that carries a HELP to the first target receiving its alert.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from alerter.clock import SystemClock
from alerter.models import Message
from alerter.sim import Simulator, to_json, to_xml
from alerter.spot.parse import parse_feed
from alerter.store import Store

RULES = Path(__file__).resolve().parent.parent / "rules"


def page(n: int = 50, first_id: int = 1_900_000_000) -> list[Message]:
    """A realistic page: one device tracking every 2.5 min, newest first."""
    t = int(time.time())
    return [
        Message(
            id=first_id + i,
            messenger_id="0-4200001",
            messenger_name="Alice",
            unix_time=t - 150 * i,
            type="TRACK",
            latitude=46.5 + i / 1e4,
            longitude=7.9,
            altitude=1200,
            model_id="SPOT3",
            battery="GOOD",
            date_time=None,
        )
        for i in range(n)
    ]


def timed(fn: object, runs: int) -> float:
    """Median seconds of `runs` calls."""
    assert callable(fn)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_parse_store(runs: int = 300) -> dict[str, float]:
    msgs = page()
    xml = to_xml(msgs, feed_id="0BENCH", feed_name="Bench", total=50)
    js = to_json(msgs, feed_id="0BENCH", feed_name="Bench", total=50)
    assert len(parse_feed(xml).messages) == 50
    out = {
        "parse_xml_ms": timed(lambda: parse_feed(xml, "xml"), runs) * 1e3,
        "parse_json_ms": timed(lambda: parse_feed(js, "json"), runs) * 1e3,
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        ids = itertools.count(2_000_000_000, 50)

        def store_page() -> None:
            store.insert_messages("0BENCH", page(first_id=next(ids)), time.time(), initial=False)

        out["store_page_ms"] = timed(store_page, runs // 3) * 1e3
        store.close()
    out["parse_and_store_ms"] = out["parse_xml_ms"] + out["store_page_ms"]
    return out


class Receiver:
    """A json:// endpoint recording when each alert arrived (time.monotonic)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, object]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        t = time.monotonic()
        self.arrivals.append((t, await request.json()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench_service(feeds: int, interval: float, spacing: float, seconds: float) -> dict:
    sim = Simulator(SystemClock(), seed=7)
    receiver = Receiver()
    await receiver.start()
    base = await sim.start()
    now = time.time()
    feed_objs = []
    for n in range(feeds):
        f = sim.add_feed(f"0BENCHFEED{n:06d}", name=f"Feed {n}")
        d = f.add_device(f"0-{5000000 + n}", f"Walker {n}")
        d.track(start=now - 3600, every=300, count=13)  # an hour of history each
        feed_objs.append(f)
    # HELPs appear on random feeds while the service runs (after it has synced).
    rng = random.Random(7)
    helps: dict[str, float] = {}  # device id -> when it became visible (wall clock)
    for k in range(40):
        f = rng.choice(feed_objs)
        dev = f.add_device(f"0-{6000000 + k}", f"Hiker {k}")
        at = now + 8 + k * (seconds - 12) / 40
        dev.send("HELP", at, 46.5, 7.9)
        helps[dev.messenger_id] = at
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "apprise.yml").write_text(
            f"urls:\n  - json://127.0.0.1:{receiver.port}/rescue:\n      tag: rescue\n"
            f"  - json://127.0.0.1:{receiver.port}/admin:\n      tag: admin, rescue-backup\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTER_")}
        env.update(
            ALERTER_FEEDS=json.dumps([{"id": f.id, "name": f.name} for f in feed_objs]),
            ALERTER_SPOT_BASE_URL=base,
            ALERTER_POLL_INTERVAL=str(interval),
            ALERTER_FEED_SPACING=str(spacing),
            ALERTER_RULES=str(RULES),
            ALERTER_APPRISE_CONFIG=str(root / "apprise.yml"),
            ALERTER_STATE_DIR=str(root / "state"),
            ALERTER_LOG_LEVEL="WARNING",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "alerter", "run", cwd=root, env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(seconds)
        rss = peak_rss_mb(proc.pid)
        proc.terminate()
        await proc.wait()
    await sim.stop()
    await receiver.stop()

    reqs = sim.requests
    per_feed = []
    interval_violations = 0
    for f in feed_objs:
        times = [r.mono for r in reqs if r.feed_id == f.id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        per_feed.extend(gaps)
        interval_violations += sum(g < interval for g in gaps)
    any_gaps = [b.mono - a.mono for a, b in itertools.pairwise(reqs)]
    spacing_violations = sum(g < spacing for g in any_gaps)

    latencies = []
    for dev_id, visible in helps.items():
        feed_id = next(f.id for f in feed_objs if dev_id in f.devices)
        poll = next((r for r in reqs if r.feed_id == feed_id and r.at >= visible), None)
        alert = next(
            (t for t, body in receiver.arrivals if dev_id in str(body.get("message", ""))),
            None,
        )
        if poll is not None and alert is not None:
            latencies.append(alert - poll.mono)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return {
        "feeds": feeds,
        "interval_s": interval,
        "spacing_s": spacing,
        "requests": len(reqs),
        "median_feed_gap_s": statistics.median(per_feed),
        "median_ratio": statistics.median(per_feed) / interval,
        "interval_violations": interval_violations,
        "spacing_violations": spacing_violations,
        "min_spacing_s": min(any_gaps),
        "peak_rss_mb": rss,
        "helps_alerted": f"{len(latencies)}/{len(helps)}",
        "latency_p50_ms": p(0.5) if latencies else None,
        "latency_p99_ms": p(0.99) if latencies else None,
        "latency_max_ms": latencies[-1] * 1e3 if latencies else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--feeds", type=int, nargs="+", default=[75, 50])
    ap.add_argument("--interval", type=float, default=1.5)
    ap.add_argument("--spacing", type=float, default=0.02)
    args = ap.parse_args()
    print(json.dumps(bench_parse_store(), indent=2))
    # 75 x 0.02 s fills the 1.5 s interval exactly, so spacing binds; 50 feeds leave room.
    for feeds in args.feeds:
        result = asyncio.run(bench_service(feeds, args.interval, args.spacing, args.seconds))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
