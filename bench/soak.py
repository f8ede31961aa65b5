"""Soak check, run by hand (`make soak`): does `alerter run` stay flat while it alerts?

The real `alerter run` process watches ~30 feeds of the local simulator (poll interval
1 s, spacing 0.02 s, all on 127.0.0.1). Each feed has one device that sends a HELP,
then a HELP-CANCEL, then a HELP again, ... so every few seconds incidents open and
resolve and alerts go out through Apprise to a local json:// receiver, which accepts
and counts every POST.

The child's RSS (/proc/PID/status VmRSS) is read after a warm-up (the first 200
alerts), in the middle and at the end. The check fails (exit 1) when the RSS grew more
than `--max-growth` MiB (default 5) from warm-up to end; exit 2 when the run did not
reach `--alerts` alerts within `--time-limit` seconds, or the service died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from alerter.clock import SystemClock
from alerter.sim import SimDevice, Simulator

WARM_UP = 200  # alerts before the baseline sample

RULES = """\
rules:
  - name: help
    when: {type: [HELP]}
    notify: [rescue]
    severity: critical
  - name: help-cancel
    when: {type: [HELP-CANCEL]}
    resolves: help
    notify: [rescue]
"""


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident set (or `VmHWM`, its peak) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Receiver:
    """A json:// endpoint on 127.0.0.1 that accepts every POST and counts them."""

    def __init__(self) -> None:
        self.count = 0
        self.by_path: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.count += 1
        self.by_path[request.path] += 1
        self.kinds[str(body.get("title", "")).split(":")[0]] += 1
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def drive(devices: list[SimDevice], period: float, stop: asyncio.Event) -> None:
    """Each device alternates HELP and HELP-CANCEL every `period` seconds, staggered.

    Message times are whole seconds (as on SPOT); each device's next message is at least
    one second after its previous one, so HELP and its cancel never share a second.
    """
    t0 = time.time() + 2.0  # the service polls every feed once before the first HELP
    due = [t0 + k * period / len(devices) for k in range(len(devices))]
    last = [0] * len(devices)
    helping = [False] * len(devices)
    while not stop.is_set():
        now = time.time()
        for k, dev in enumerate(devices):
            if now < due[k] or int(now) <= last[k]:
                continue
            if helping[k]:
                dev.send("HELP-CANCEL", now, content="The help message has been cancelled")
            else:
                dev.send("HELP", now, 46.5 + k / 1e3, 7.9, content="Soak test")
            helping[k] = not helping[k]
            last[k] = int(now)
            due[k] += period
            if due[k] < now:  # fell behind (a slow start): no burst to catch up
                due[k] = now + period
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def soak(args: argparse.Namespace) -> int:
    sim = Simulator(SystemClock(), seed=11)
    receiver = Receiver()
    await receiver.start()
    base = await sim.start()
    devices = []
    for n in range(args.feeds):
        feed = sim.add_feed(f"0SOAKFEED{n:06d}", name=f"Feed {n}")
        devices.append(feed.add_device(f"0-{7000000 + n}", f"Walker {n}"))

    marks = {"warm-up": WARM_UP, "middle": (WARM_UP + args.alerts) // 2, "end": args.alerts}
    samples: dict[str, tuple[int, int, float]] = {}  # mark -> (alerts, requests, RSS MiB)
    trace: list[tuple[float, int, int, float]] = []  # (seconds, alerts, requests, RSS MiB)
    stop = asyncio.Event()
    proc: asyncio.subprocess.Process | None = None
    driver: asyncio.Task[None] | None = None
    code = 0
    seconds, peak = 0.0, float("nan")
    with tempfile.TemporaryDirectory(prefix="alerter-soak-") as tmp:
        root = Path(tmp)
        (root / "rules.yml").write_text(RULES)
        (root / "apprise.txt").write_text(
            f"rescue=json://127.0.0.1:{receiver.port}/rescue\n"
            f"admin=json://127.0.0.1:{receiver.port}/admin\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTER_")}
        env.update(
            ALERTER_FEEDS=json.dumps([{"id": f.id, "name": f.name} for f in sim.feeds.values()]),
            ALERTER_SPOT_BASE_URL=base,
            ALERTER_POLL_INTERVAL=str(args.interval),
            ALERTER_FEED_SPACING=str(args.spacing),
            ALERTER_REQUEST_TIMEOUT="2",
            ALERTER_RULES=str(root / "rules.yml"),
            ALERTER_APPRISE_CONFIG=str(root / "apprise.txt"),
            ALERTER_STATE_DIR=str(root / "state"),
            ALERTER_LOG_LEVEL=args.log_level,
        )
        log_path = root / "alerter.log"
        started = time.monotonic()
        try:
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "alerter", "run",
                    cwd=root, env=env, stdout=log, stderr=log,
                )  # fmt: skip
            driver = asyncio.create_task(drive(devices, args.period, stop))
            next_trace = 0.0
            pending = sorted(marks.items(), key=lambda kv: kv[1])
            while pending:
                elapsed = time.monotonic() - started
                if proc.returncode is not None:
                    print(f"alerter run exited with {proc.returncode}", file=sys.stderr)
                    code = 2
                    break
                if elapsed > args.time_limit:
                    print(
                        f"time limit: {receiver.count} of {args.alerts} alerts in "
                        f"{args.time_limit:g} s",
                        file=sys.stderr,
                    )
                    code = 2
                    break
                while pending and receiver.count >= pending[0][1]:
                    name, _ = pending.pop(0)
                    samples[name] = (receiver.count, len(sim.requests), rss_mib(proc.pid))
                if elapsed >= next_trace:
                    trace.append((elapsed, receiver.count, len(sim.requests), rss_mib(proc.pid)))
                    next_trace += args.trace_every
                await asyncio.sleep(0.02)
            seconds = time.monotonic() - started
            if proc.returncode is None:
                peak = rss_mib(proc.pid, "VmHWM")
                trace.append((seconds, receiver.count, len(sim.requests), rss_mib(proc.pid)))
        finally:
            stop.set()
            if driver is not None:
                await driver
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await sim.stop()
            await receiver.stop()
        if code:
            print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)

    print(f"\nsoak: {args.feeds} feeds, interval {args.interval:g} s, "
          f"spacing {args.spacing:g} s, HELP/HELP-CANCEL every {args.period:g} s per device, "
          f"log level {args.log_level}; {seconds:.0f} s")  # fmt: skip
    print(f"\n{'t (s)':>7} {'alerts':>7} {'requests':>9} {'RSS MiB':>8}")
    for t, n, r, m in trace:
        print(f"{t:7.0f} {n:7d} {r:9d} {m:8.1f}")
    print(f"\n{'sample':<8} {'alerts':>7} {'requests':>9} {'RSS MiB':>8}")
    for name in marks:
        if name in samples:
            n, r, m = samples[name]
            print(f"{name:<8} {n:7d} {r:9d} {m:8.1f}")
    kinds = ", ".join(f"{k} {v}" for k, v in receiver.kinds.most_common())
    admin = receiver.by_path["/admin"]
    print(f"\nalerts received: {receiver.count} ({kinds}); admin notices: {admin}")
    print(f"requests served by the simulator: {len(sim.requests)}")
    if peak == peak:  # not NaN: the service ran to the end
        print(f"peak RSS (VmHWM): {peak:.1f} MiB")
    if "middle" in samples and "end" in samples:
        (n1, _, m1), (n2, _, m2) = samples["middle"], samples["end"]
        per = (m2 - m1) * 1024 / max(1, n2 - n1)
        print(f"middle -> end: {m2 - m1:+.1f} MiB over {n2 - n1} alerts = {per:.2f} KB an alert")
    if "warm-up" in samples and "end" in samples:
        growth = samples["end"][2] - samples["warm-up"][2]
        verdict = "OK" if growth <= args.max_growth else "FAIL"
        print(f"warm-up -> end: {growth:+.1f} MiB (limit {args.max_growth:g} MiB): {verdict}")
        if growth > args.max_growth and code == 0:
            code = 1
    return code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=3000, help="alerts to receive (default 3000)")
    ap.add_argument("--feeds", type=int, default=30)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    ap.add_argument("--spacing", type=float, default=0.02, help="feed spacing, seconds")
    ap.add_argument("--period", type=float, default=2.0,
                    help="seconds between a device's HELP and its cancel, and back")  # fmt: skip
    ap.add_argument("--max-growth", type=float, default=5.0,
                    help="RSS growth allowed from warm-up to end, MiB (default 5)")  # fmt: skip
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--trace-every", type=float, default=30.0, help="seconds between RSS lines")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args()
    if args.alerts <= WARM_UP:
        ap.error(f"--alerts must be more than the {WARM_UP} warm-up alerts")
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
