"""The `alerter` command: run, check, test-notify, demo, replay, status, incidents, ack.

Exit codes: 0 fine; 1 something failed (a test send, a check); 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from alerter import __version__, logs, masking, report
from alerter.ack import AckStatus, clean_name
from alerter.clock import FakeClock, SystemClock
from alerter.config import Config, load_config, read_config
from alerter.durations import ago
from alerter.engine import Evaluation
from alerter.errors import AlerterError, ConfigError, FeedError, Problem, StoreError
from alerter.export import Format, choose_device, export, parse_when
from alerter.models import IncidentState
from alerter.notify import AppriseNotifier, Targets, load_targets
from alerter.process import Processor, render_or_plain
from alerter.render import render_test
from alerter.rules.loader import load_rules
from alerter.service import OUTBOX_STUCK_AFTER, Service, state_lock
from alerter.settings import (
    Settings,
    is_official_host,
    load_settings,
    mask_id,
    read_settings,
    state_dir_problem,
    unknown_variables,
)
from alerter.spot.parse import parse_feed, with_usable_time
from alerter.store import Store

#: How many of an open incident's latest events `status` shows.
STATUS_HISTORY = report.HISTORY


def setup_logging(level: str, fmt: logs.Format = "text") -> None:
    """Log to stderr as text or JSON lines (`alerter.logs`: one record per event, journald
    priority prefixes under systemd), every record masked (`alerter.masking`: each
    registered secret in any spelling, tracebacks included); Apprise and urllib3 never
    below INFO (at DEBUG they print secrets)."""
    logging.basicConfig(level=level, handlers=[logs.make_handler(sys.stderr, fmt)], force=True)
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
    setup_logging(settings.log_level, settings.log_format)
    logging.getLogger("alerter.cli").info("spot-alerter %s starting", __version__)
    for problem in unknown_variables():  # said, and run goes on
        logging.getLogger("alerter.cli").warning("ignored: %s", problem)
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
    """Validate settings, rules and the Apprise config; print what was found.

    Every problem of every part in one pass: an invalid setting is reported and taken at
    its default, so the Apprise config and the rules are still checked. Exit 0 when all is
    valid, 1 for any problem, 2 when a setting itself is invalid or `.env` unreadable.
    """
    try:
        settings, invalid = read_settings()
        problems = invalid + unknown_variables()
    except ConfigError as exc:  # `.env` cannot be read: nothing to go on
        print_problems(exc.problems)
        return 2
    if settings is None:
        print_problems(problems)
        return 2
    masking.register_settings(settings)
    official = " (SPOT's own host)" if is_official_host(settings.spot_base_url) else ""
    print(f"settings: SPOT at {settings.spot_base_url}{official}")
    if invalid:
        print("  (each invalid setting, listed below, is shown at its default)")
    print(
        f"  poll every {settings.poll_interval:g}s per feed, {settings.feed_spacing:g}s between "
        f"requests; time zone {settings.timezone}; state in {settings.state_dir}"
    )
    if not settings.feeds and not any(p.source.startswith("ALERTER_FEEDS") for p in invalid):
        problems.append(Problem("ALERTER_FEEDS", None, "no feed configured (needed by run)"))
    if (state := state_dir_problem(settings.state_dir)) is not None:
        problems.append(state)
    for f in settings.feeds:
        pw = "with password" if f.password else "no password"
        print(f"  feed {f.display_name}: id {mask_id(f.id)}, {pw}")
    reading = read_config(settings)
    problems.extend(reading.problems)
    targets = reading.targets
    if targets.targets:
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
    for w in reading.warnings:  # odd but not wrong: no reason to fail
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        print_problems(problems)
        return 2 if invalid else 1
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


def cmd_status(args: argparse.Namespace) -> int:
    """Feeds, devices, open incidents with their history, the outbox (`alerter.report`);
    exit 1 when something needs an admin (a feed failing, a target failing, an incident
    open)."""
    settings = _settings()
    if not settings.database.exists():
        print(f"no state yet in {settings.state_dir} (has `alerter run` started?)",
              file=sys.stderr if args.json else sys.stdout)  # fmt: skip
        return 1
    store = Store.open(settings.database, migrate=False)
    try:
        now = SystemClock().now()
        health = report.state_health(store, settings, now, stuck_after=OUTBOX_STUCK_AFTER)
        status = report.build(store, settings, now, health, judged_by="state database")
    finally:
        store.close()
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        print(report.text(status))
    return 1 if status["needs_admin"] else 0


# -- incidents, ack ------------------------------------------------------------


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_incidents(_: argparse.Namespace) -> int:
    """Open and acknowledged incidents: id, rule, device, since, state, who took it."""
    settings = _settings()
    if not settings.database.exists():
        print(f"no state yet in {settings.state_dir} (has `alerter run` started?)")
        return 1
    store = Store.open(settings.database, migrate=False)
    try:
        incidents = [i for i in store.incidents() if i.is_open]
        devices = store.devices()
    finally:
        store.close()
    if not incidents:
        print("no open incidents")
        return 0
    now = SystemClock().now()
    rows = [("ID", "RULE", "DEVICE", "SINCE", "STATE")]
    for i in incidents:
        device = devices.get(i.device_id)
        state = i.state.value
        if i.state is IncidentState.ACKNOWLEDGED:
            when = f" at {_utc(i.acknowledged_at)}" if i.acknowledged_at is not None else ""
            state += f" by {i.acknowledged_by or 'someone'}{when}"
        rows.append(
            (
                f"#{i.id}",
                i.rule,
                f"{device.name} ({device.id})" if device else i.device_id,
                f"{_utc(i.started_at)} ({ago(i.started_at, now)})",
                state,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[4]]))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    """Take an open incident: reminders and escalation stop, everyone it reached is told
    who took it (the same as the acknowledgement page). Safe beside `alerter run`."""
    settings = _settings()
    setup_logging("WARNING")
    if clean_name(args.by) is None:
        print("alerter: --by needs a name (who takes the incident)", file=sys.stderr)
        return 2
    if not settings.database.exists():
        print(f"alerter: no state yet in {settings.state_dir}", file=sys.stderr)
        return 1
    config = load_config(settings)
    store = Store.open(settings.database)
    try:
        outcome = Processor(settings, config, store, SystemClock()).acknowledge(
            args.id, args.by, "cli"
        )
    finally:
        store.close()
    inc = outcome.incident
    if outcome.status is AckStatus.NOT_OPEN or inc is None:
        what = "no such incident" if inc is None else "it was resolved"
        print(f"alerter: incident #{args.id} is not open ({what}); nothing changed",
              file=sys.stderr)  # fmt: skip
        return 1
    when = _utc(outcome.at) if outcome.at is not None else "an unknown time"
    if outcome.status is AckStatus.ALREADY:
        print(f"incident #{inc.id} ({inc.rule}) was already acknowledged by "
              f"{outcome.by or 'someone'} at {when}; nothing changed")  # fmt: skip
        return 0
    print(f"incident #{inc.id} ({inc.rule}) acknowledged by {outcome.by} at {when}; "
          f"reminders and escalation stop; {outcome.notified} "
          f"target{'' if outcome.notified == 1 else 's'} will be told")  # fmt: skip
    return 0


# -- export, backup --------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    """A device's stored track, oldest first, as GPX, GeoJSON or CSV (stdout or a file)."""
    settings = _settings()
    now = SystemClock().now()
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"alerter: {exc}", file=sys.stderr)
        return 2
    if since is not None and until is not None and since > until:
        print("alerter: --since is after --until", file=sys.stderr)
        return 2
    if not settings.database.exists():
        print(f"alerter: no state yet in {settings.state_dir}", file=sys.stderr)
        return 1
    store = Store.open(settings.database, migrate=False)
    try:
        try:
            device = choose_device(store.devices().values(), args.device)
        except LookupError as exc:
            print(f"alerter: {exc.args[0]}", file=sys.stderr)
            return 1
        track = store.track(device.id, since, until)
        names = settings.feed_names({fid: st.name for fid, st in store.feed_states().items()})
    finally:
        store.close()
    fmt = Format(args.format)
    result = export(fmt, track, device, names)
    data = result.text.encode()
    if args.output in (None, "-"):
        where = "stdout"
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        # Positions of people: private (0600) like the state, and never half written.
        target = Path(args.output).absolute()
        where = str(args.output)
        written: Path | None = None
        try:
            with tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            ) as tmp:
                written = Path(tmp.name)
                tmp.write(data)
            written.replace(target)
        except OSError as exc:
            if written is not None:
                written.unlink(missing_ok=True)
            print(f"alerter: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    left_out = f"; {result.left_out} without a GPS fix left out" if result.left_out else ""
    print(f"{device.name} ({device.id}): {result.written} messages as {fmt.value} to "
          f"{where}{left_out}", file=sys.stderr)  # fmt: skip
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the state database (SQLite's online backup), then checked."""
    settings = _settings()
    if not settings.database.exists():
        print(f"alerter: no state yet in {settings.state_dir}", file=sys.stderr)
        return 1
    path = Path(args.file)
    if path.is_dir():
        print(f"alerter: {path} is a directory; name the backup file", file=sys.stderr)
        return 1
    if path.exists() and not args.force:
        print(f"alerter: {path} exists; --force replaces it", file=sys.stderr)
        return 1
    # No state lock: the backup API reads one snapshot beside a running service (WAL).
    store = Store.open(settings.database, migrate=False)
    try:
        size, integrity, version = store.backup(path, replace=args.force)
    except StoreError as exc:
        print(f"alerter: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"backup: {path} ({size} bytes)")
    print(f"checked: integrity_check {integrity}, schema version {version}")
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
    e = sub.add_parser("export", help="a device's stored track as GPX, GeoJSON or CSV")
    e.add_argument("--device", required=True, help="the device's name (any case) or id")
    e.add_argument("--format", required=True, choices=[f.value for f in Format])
    when = "an ISO date/time (UTC unless it has an offset) or a duration ago (6h, 2d)"
    e.add_argument("--since", metavar="WHEN", help=f"messages from then on: {when}")
    e.add_argument("--until", metavar="WHEN", help=f"messages up to then (included): {when}")
    e.add_argument("--output", "-o", metavar="FILE", help="write here (0600), not to stdout")
    e.set_defaults(fn=cmd_export)
    b = sub.add_parser("backup", help="a consistent copy of the state, safe while running")
    b.add_argument("file", metavar="FILE", help="the copy (created 0600)")
    b.add_argument("--force", action="store_true", help="replace FILE if it exists")
    b.set_defaults(fn=cmd_backup)
    st = sub.add_parser("status", help="incidents, devices and feeds; exit 1 if an admin is needed")
    st.add_argument("--json", action="store_true", help="the report as JSON (as /status shows it)")
    st.set_defaults(fn=cmd_status)
    sub.add_parser(
        "incidents", help="open and acknowledged incidents, with who took them"
    ).set_defaults(fn=cmd_incidents)
    a = sub.add_parser("ack", help="take an open incident: reminders stop, its contacts are told")
    a.add_argument("id", type=int, metavar="ID", help="the incident's id (`alerter incidents`)")
    a.add_argument("--by", required=True, metavar="NAME", help="who takes it (shown to all)")
    a.set_defaults(fn=cmd_ack)
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
    except OSError as exc:  # a file or folder the command needs cannot be used: one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"alerter: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except AlerterError as exc:
        print(f"alerter: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
