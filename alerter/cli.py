"""The `alerter` command: run, check, test-notify, demo, replay, status.

Exit codes: 0 fine; 1 something failed (a test send, a check); 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from alerter import __version__, masking
from alerter.clock import FakeClock, SystemClock
from alerter.config import Config, load_config, read_config
from alerter.durations import ago
from alerter.engine import Evaluation
from alerter.errors import AlerterError, ConfigError, FeedError, Problem, StoreError
from alerter.health import feed_status
from alerter.models import DeliveryState
from alerter.notify import AppriseNotifier, Targets, load_targets
from alerter.process import Processor, render_or_plain
from alerter.render import render_test
from alerter.rules.loader import load_rules
from alerter.service import Service, state_lock
from alerter.settings import Settings, is_official_host, load_settings, mask_id
from alerter.spot.parse import parse_feed, with_usable_time
from alerter.store import Store

#: How many of an open incident's latest events `status` shows.
STATUS_HISTORY = 10


def setup_logging(level: str) -> None:
    """Log to stderr, every record masked (`alerter.masking`: each registered secret in
    any spelling, tracebacks included); Apprise and urllib3 never below INFO (at DEBUG
    they print secrets)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        masking.install_log_filter(handler)
    floor = max(logging.INFO, logging.getLevelName(level))
    for name in ("apprise", "urllib3"):
        logging.getLogger(name).setLevel(floor)


def print_problems(problems: Sequence[Problem], out: TextIO | None = None) -> None:
    """`file:line: message`, one a line (to stderr unless told)."""
    for p in problems:
        print(p, file=out or sys.stderr)


def _settings() -> Settings:
    settings = load_settings()
    # Before anything can print: every secret setting is masked in any spelling (the
    # Apprise URLs' secrets are added as their config is read).
    masking.register_settings(settings)
    return settings


# -- run ---------------------------------------------------------------------


def cmd_run(_: argparse.Namespace) -> int:
    """The service, in the foreground."""
    settings = _settings()
    setup_logging(settings.log_level)
    if not settings.feeds:
        raise ConfigError([Problem("ALERTER_FEEDS", None, "no feed configured (a JSON list)")])
    config = load_config(settings)
    with state_lock(settings.state_dir):
        store = Store.open(settings.database)
        try:
            asyncio.run(Service(settings, config, store).run())
        finally:
            store.close()
    return 0


# -- check -------------------------------------------------------------------


def cmd_check(_: argparse.Namespace) -> int:
    """Validate settings, rules and the Apprise config; print what was found."""
    problems: list[Problem] = []
    try:
        settings = _settings()
    except ConfigError as exc:
        print_problems(exc.problems)
        return 2
    official = " (SPOT's own host)" if is_official_host(settings.spot_base_url) else ""
    print(f"settings: SPOT at {settings.spot_base_url}{official}")
    print(
        f"  poll every {settings.poll_interval:g}s per feed, {settings.feed_spacing:g}s between "
        f"requests; time zone {settings.timezone}; state in {settings.state_dir}"
    )
    if not settings.feeds:
        problems.append(Problem("ALERTER_FEEDS", None, "no feed configured (needed by run)"))
    for f in settings.feeds:
        pw = "with password" if f.password else "no password"
        print(f"  feed {f.display_name}: id {mask_id(f.id)}, {pw}")
    reading = read_config(settings)
    problems.extend(reading.problems)
    targets = reading.targets
    if targets is not None:
        print(f"apprise: {settings.apprise_config}: {len(targets.targets)} targets")
        for t in targets.targets:
            form = "short form" if t.short else "long form"
            print(f"  [{', '.join(sorted(t.tags)) or 'no tag'}] {t.label} ({form})")
        for t in targets.targets:
            if not t.tags:
                print(f"  warning: {t.label} has no tag: no rule can reach it")
        if settings.admin_tag not in targets.tags():
            print(f"  warning: no URL carries the admin tag {settings.admin_tag!r}")
    rules = reading.rules
    if rules is not None:
        print(f"rules: {settings.rules}: {len(rules.rules)} rules")
        for r in rules.rules:
            action = f"resolves {', '.join(r.resolves)}" if r.resolves else r.severity.value
            print(
                f"  {r.name} ({rules.origins.get(r.name, '?')}): {r.when.trigger.value}, "
                f"{action}, notify [{', '.join(r.notify)}]"
            )
    for w in reading.warnings:  # odd but not wrong: said, and no reason to fail
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        print_problems(problems)
        return 1
    print("ok")
    return 0


# -- test-notify ---------------------------------------------------------------


async def _test_notify(settings: Settings, tag: str | None) -> int:
    targets = load_targets(settings.apprise_config)
    chosen = targets.for_tags([tag]) if tag else list(targets.targets)
    if not chosen:
        print(f"no target carries the tag {tag!r}", file=sys.stderr)
        return 1
    clock = SystemClock()
    rendered = render_test(clock.now(), settings.zone)
    notifier = AppriseNotifier()
    results = await asyncio.gather(
        *(
            notifier.send(
                t, "" if t.short else rendered.title,
                rendered.short if t.short else rendered.body, rendered.severity,
            )
            for t in chosen
        )
    )  # fmt: skip
    failed = 0
    for t, r in zip(chosen, results, strict=True):
        print(f"{'ok    ' if r.ok else 'FAILED'} [{', '.join(sorted(t.tags))}] {t.label}"
              + ("" if r.ok else f": {r.error}"))  # fmt: skip
        failed += not r.ok
    return 1 if failed else 0


def cmd_test_notify(args: argparse.Namespace) -> int:
    """Send a clearly marked test alert to each target (or one tag)."""
    settings = _settings()
    setup_logging("WARNING")
    return asyncio.run(_test_notify(settings, args.tag))


# -- replay --------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """Recorded feed responses through the rules: print the alerts (dry run)."""
    settings = _settings()
    setup_logging("ERROR")
    rules = load_rules(settings.rules, min_interval=settings.poll_interval)
    pages = []
    for name in args.files:
        try:
            pages.append(parse_feed(Path(name).read_bytes()))
        except (OSError, FeedError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "replay.db")
        clock = FakeClock(0)
        replay_settings = settings.model_copy(update={"state_dir": Path(tmp)})
        # No targets: every decision is rendered and printed, nothing is sent.
        processor = Processor(replay_settings, Config(rules, Targets()), store, clock)
        for page in pages:
            store.ensure_feed(page.feed_id or "replay", 0)
            store.record_success(page.feed_id or "replay", 0, page.feed_name)
        items = sorted(
            ((m, p.feed_id or "replay") for p in pages for m in p.messages),
            key=lambda x: (x[0].unix_time, x[0].id),
        )
        count, next_due, i = 0, None, 0
        while i < len(items):
            # The service sees a message at its next poll, at most one interval later.
            poll_at = items[i][0].unix_time + settings.poll_interval
            while next_due is not None and next_due < poll_at:
                clock.t = max(clock.t, next_due)
                result = processor.process()
                count += _show(result, clock.now(), settings)
                next_due = result.next_due
            while i < len(items) and items[i][0].unix_time <= poll_at:
                msg, feed_id = items[i]
                dated = with_usable_time(msg, poll_at)  # as the watcher does at intake
                store.insert_messages(feed_id, [dated], poll_at, initial=False)
                i += 1
            clock.t = max(clock.t, poll_at)
            result = processor.process()
            count += _show(result, clock.now(), settings)
            next_due = result.next_due
        store.close()
    print(f"{len(items)} messages, {count} alerts (dry run: nothing was sent)")
    return 0


def _show(result: Evaluation, now: float, settings: Settings) -> int:
    shown = 0
    for d in result.decisions:
        if not d.tags:
            continue
        r = render_or_plain(d, now, settings.zone)
        print(f"=> to [{', '.join(d.tags)}] {r.title}")
        for line in r.body.splitlines():
            print(f"   {line}")
        print(f"   SMS: {r.short}\n")
        shown += 1
    return shown


# -- status --------------------------------------------------------------------


def cmd_status(_: argparse.Namespace) -> int:
    """Open incidents with their history, each device's last message and position, feeds."""
    settings = _settings()
    if not settings.database.exists():
        print(f"no state yet in {settings.state_dir} (has `alerter run` started?)")
        return 1
    store = Store.open(settings.database)
    now = SystemClock().now()
    print("feeds:")
    states = store.feed_states()
    names = settings.feed_names({fid: st.name for fid, st in states.items()})
    counts = store.message_counts()
    started = float(store.get_meta("started_at") or 0)
    for fid, st in states.items():
        health = feed_status(st, now, started, settings.feed_failing_after)
        last = ago(st.last_request, now)
        ok = ago(st.last_success, now)
        # Masked again: a row stored by an older version may hold a secret.
        err = (
            f"; last error: {masking.mask(st.last_error or '')} ({st.failures}x)"
            if st.failures
            else ""
        )
        print(f"  {names[fid]}: {health}; last poll {last}; last good answer {ok}; "
              f"{counts.get(fid, 0)} messages stored{err}")  # fmt: skip
    print("devices:")
    devices = store.devices()
    for dev in sorted(devices.values(), key=lambda d: d.name.lower()):
        m = dev.last.message if dev.last else None
        if m is None:
            continue
        where = f"{m.latitude:.5f}, {m.longitude:.5f}" if m.has_position else "no GPS fix"
        print(f"  {dev.name} ({dev.id}): {m.type} {ago(m.unix_time, now)}, {where}"
              + (f", battery {m.battery}" if m.battery else ""))  # fmt: skip
    open_ = [i for i in store.incidents() if i.is_open]
    print(f"open incidents: {len(open_) or 'none'}")
    for i in open_:
        who = devices[i.device_id].name if i.device_id in devices else i.device_id
        print(f"  #{i.id} {i.rule} for {who}: {i.state.value} since {ago(i.started_at, now)}, "
              f"{i.reminders} reminders, escalation {i.escalation}")  # fmt: skip
        for e in store.history(i.id or 0)[-STATUS_HISTORY:]:
            told = "notified" if e.notified else f"nobody told: {e.held_back or 'recorded only'}"
            print(f"    {ago(e.at, now)}: {e.reason.value}; {told}")
    deliveries = store.delivery_counts()
    print("outbox: " + ", ".join(f"{deliveries.get(s, 0)} {s}" for s in DeliveryState))
    store.close()
    return 0


# -- main ----------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole service against the built-in simulator, on an accelerated clock."""
    # Imported here: it registers the console:// Apprise scheme, for the demo only.
    from alerter.demo import run_demo  # noqa: PLC0415

    setup_logging("ERROR")  # the story is the output; the service's own log would drown it
    return asyncio.run(run_demo(speed=args.speed))


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="alerter", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"spot-alerter {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the service, in the foreground").set_defaults(fn=cmd_run)
    sub.add_parser("check", help="validate settings, rules and targets").set_defaults(fn=cmd_check)
    t = sub.add_parser("test-notify", help="send a marked test alert to each target")
    t.add_argument("--tag", help="only the targets carrying this tag")
    t.set_defaults(fn=cmd_test_notify)
    d = sub.add_parser("demo", help="the service against a built-in simulated feed")
    d.add_argument("--speed", type=float, default=75.0, help="clock speed-up (default 75)")
    d.set_defaults(fn=cmd_demo)
    r = sub.add_parser("replay", help="recorded feed responses through the rules (dry run)")
    r.add_argument("files", nargs="+", metavar="FILE")
    r.set_defaults(fn=cmd_replay)
    sub.add_parser("status", help="incidents, devices and feeds").set_defaults(fn=cmd_status)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alerter` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print_problems(exc.problems)
        return 2
    except StoreError as exc:
        print(f"alerter: {exc}", file=sys.stderr)
        return 2
    except AlerterError as exc:
        print(f"alerter: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
