"""The composition root: wires watch -> store -> engine -> render -> outbox, and runs them.

Three tasks share one SQLite store and wake each other with events:
- the watcher polls SPOT within its limits and stores new messages;
- the processor runs the engine on unprocessed messages and on the clock, and commits
  its decisions, the processed marks and the outbox rows in one transaction;
- the sender delivers the outbox.
Signals: SIGTERM/SIGINT stop cleanly (sends in flight get a grace period, the rest stay
in the outbox); SIGHUP reloads the rules and the Apprise config, keeping the old ones
when the new ones are invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from alerter.clock import Clock, SystemClock, sleep_or_wake
from alerter.engine import EngineConfig, Evaluation, Snapshot, evaluate
from alerter.errors import AlerterError, ConfigError, Problem, StoreError
from alerter.health import feed_health
from alerter.models import AdminKind, AdminNotice, Decision, Reason
from alerter.notify import AppriseNotifier, Notifier, Targets, load_targets
from alerter.outbox import Sender
from alerter.render import render, render_admin
from alerter.rules import RuleSet, load_rules
from alerter.settings import Settings, mask_id
from alerter.spot.client import FeedClient
from alerter.store import EngineEvent, FeedState, Outgoing, Store
from alerter.watch import HISTORY, Watcher

log = logging.getLogger("alerter.service")

#: The processor looks at the clock at least this often, even with nothing due.
MAX_IDLE = 30.0
#: How long in-flight sends may finish after a stop signal.
STOP_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    """What an admin edits besides settings: rules and targets, loaded and cross-checked."""

    rules: RuleSet
    targets: Targets


def load_config(settings: Settings) -> Config:
    """The Apprise config and the rules (whose tags must exist); ConfigError lists faults."""
    problems: list[Problem] = []
    targets = Targets()
    try:
        targets = load_targets(settings.apprise_config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        rules = load_rules(settings.rules, known_tags=targets.tags() if targets.targets else None)
    except ConfigError as exc:
        problems.extend(exc.problems)
    else:
        if not rules.rules:
            problems.append(Problem(str(settings.rules), None, "no rules: nobody would be alerted"))
    if problems:
        raise ConfigError(problems)
    return Config(rules, targets)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One service per state directory: a second `alerter run` would poll twice as fast."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / "alerter.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another alerter run is using {state_dir}; two would break SPOT's limits"
            ) from None
        yield
    finally:
        os.close(fd)


class Service:
    """The whole pipeline."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        store: Store,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.notifier = notifier or AppriseNotifier()
        self.engine_config = EngineConfig(
            lookback=settings.first_start_lookback,
            late_after=max(2 * settings.poll_interval, 600.0),
        )
        self.started_at = self.clock.now()
        self.stop_event = asyncio.Event()
        self.changed = asyncio.Event()
        self.sender = Sender(
            store, lambda: self.config.targets, self.notifier, self.clock, self.notify_admins
        )
        self.watcher: Watcher | None = None

    # -- processing ----------------------------------------------------------

    def feed_names(self, states: Mapping[str, FeedState] | None = None) -> dict[str, str]:
        """Display names: the admin's, else SPOT's, else the masked id."""
        states = self.store.feed_states() if states is None else states
        names = {fid: st.name or mask_id(fid) for fid, st in states.items()}
        names.update({f.id: f.name for f in self.settings.feeds if f.name})
        return names

    def evaluate_now(self) -> tuple[Evaluation, list[Outgoing], float]:
        """Run the engine on what is pending; render what must be sent (no writes)."""
        now = self.clock.now()
        incidents = self.store.incidents(
            resolved_since=now - HISTORY - self.settings.first_start_lookback
        )
        wanted = {i.first_message_id for i in incidents} | {i.last_message_id for i in incidents}
        snapshot = Snapshot(
            devices=self.store.devices(),
            incidents=incidents,
            messages=self.store.messages_by_id(i for i in wanted if i is not None),
            feed_names=self.feed_names(),
            next_incident_id=self.store.next_incident_id(),
        )
        pending = self.store.pending()
        result = evaluate(self.config.rules, snapshot, pending, now, self.engine_config)
        outgoing = [self.outgoing(d, now) for d in result.decisions if d.tags]
        return result, outgoing, now

    def outgoing(self, d: Decision, now: float) -> Outgoing:
        """A decision's notification and the targets its tags select."""
        targets = self.config.targets.for_tags(d.tags)
        if not targets:
            log.warning("no Apprise URL carries %s: %s goes nowhere", d.tags, d.reason)
        return Outgoing(
            rendered=render(d, now, self.settings.zone),
            kind=d.reason.value,
            targets=tuple((t.id, t.label, t.short) for t in targets),
            incident_id=d.incident.id,
            resolution=d.reason is Reason.RESOLVED,
        )

    def process(self) -> Evaluation:
        """One engine cycle, committed atomically (`next_due`: when the clock next matters)."""
        result, outgoing, now = self.evaluate_now()
        if not result.decisions and not result.processed:
            return result
        events = [
            EngineEvent(
                incident_id=d.incident.id or 0,
                at=now,
                reason=d.reason.value,
                message_id=d.message.message.id if d.message else None,
                notified=bool(d.tags),
            )
            for d in result.decisions
        ]
        self.store.commit_evaluation(
            processed=result.processed,
            incidents=result.incidents,
            events=events,
            outgoing=outgoing,
            at=now,
        )
        for d in result.decisions:
            log.info("%s", describe_decision(d))
        if outgoing:
            self.sender.wake.set()
        return result

    def check_feeds(self) -> None:
        """Tell the admins when a feed starts failing or is blocked, and when it recovers."""
        now = self.clock.now()
        states = self.store.feed_states()
        for h in feed_health(
            states,
            self.feed_names(states),
            (f.id for f in self.settings.feeds),
            now,
            self.started_at,
            self.settings.feed_failing_after,
        ):
            if h.notice is not None:
                self.notify_admins(h.notice)
                self.store.set_feed_told(h.feed_id, h.status)

    def notify_admins(self, notice: AdminNotice, exclude_target: str | None = None) -> None:
        """Queue a notice for the admin tag (never to the target the notice is about)."""
        now = self.clock.now()
        targets = self.config.targets.for_tags([self.settings.admin_tag], exclude=exclude_target)
        log.warning("admin notice: %s: %s %s", notice.kind, notice.subject, notice.detail)
        if not targets:
            log.warning("no Apprise URL carries the admin tag %r", self.settings.admin_tag)
            return
        rendered = render_admin(notice, now, self.settings.zone)
        chosen = tuple((t.id, t.label, t.short) for t in targets)
        self.store.enqueue([Outgoing(rendered, notice.kind.value, chosen)], now)
        self.sender.wake.set()

    def reload(self) -> bool:
        """Load rules and targets again; on a fault keep the old ones and tell the admins."""
        try:
            config = load_config(self.settings)
        except ConfigError as exc:
            detail = "\n".join(str(p) for p in exc.problems[:10])
            log.error(  # noqa: TRY400 (the problems are the message; no traceback helps)
                "reload rejected; keeping the previous rules and targets:\n%s", detail
            )
            self.notify_admins(
                AdminNotice(AdminKind.RULES_REJECTED, str(self.settings.rules), detail,
                            self.clock.now())
            )  # fmt: skip
            return False
        self.config = config
        log.info(
            "reloaded: %d rules, %d targets", len(config.rules.rules), len(config.targets.targets)
        )
        self.changed.set()
        return True

    # -- running -------------------------------------------------------------

    async def _processor(self) -> None:
        while not self.stop_event.is_set():
            self.changed.clear()
            try:
                next_due = self.process().next_due
                self.check_feeds()
            except AlerterError:
                log.exception("processing failed; retrying")
                next_due = None
            except Exception:
                # Catch once per cycle, with context; never swallow cancellation.
                log.exception("unexpected error while processing; retrying")
                next_due = None
            now = self.clock.now()
            wait = MAX_IDLE if next_due is None else min(MAX_IDLE, max(0.0, next_due - now))
            await sleep_or_wake(self.clock, wait, self.changed)

    def stop(self) -> None:
        """Ask every task to finish."""
        self.stop_event.set()
        self.changed.set()
        self.sender.wake.set()

    def _on_change(self) -> None:
        self.changed.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until stopped."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.store.set_meta("started_at", repr(self.started_at))
        log.info(
            "watching %d feeds every %.4gs (spacing %.4gs); %d rules; %d targets",
            len(self.settings.feeds), self.settings.poll_interval, self.settings.feed_spacing,
            len(self.config.rules.rules), len(self.config.targets.targets),
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            client = FeedClient(
                session,
                self.settings.spot_base_url,
                self.settings.feed_format,
                timeout=min(self.settings.request_timeout, self.settings.poll_interval * 0.9),
            )
            self.watcher = Watcher(self.settings, client, self.store, self.clock, self._on_change)
            self.watcher.load()
            watcher = asyncio.create_task(self.watcher.run(self.stop_event), name="watch")
            processor = asyncio.create_task(self._processor(), name="process")
            sender = asyncio.create_task(self.sender.run(self.stop_event), name="send")
            tasks = (watcher, processor, sender)
            try:
                done, _ = await asyncio.wait(
                    (asyncio.ensure_future(self.stop_event.wait()), *tasks),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    if task in tasks and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                self.stop()
                watcher.cancel()
                _, pending = await asyncio.wait((processor, sender), timeout=STOP_GRACE)
                for task in pending:
                    log.warning("stopping: %s did not finish in time; its sends stay queued",
                                task.get_name())  # fmt: skip
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped")


def describe_decision(d: Decision) -> str:
    """One log line per decision."""
    m = d.message.message if d.message else None
    what = f"{m.type} id={m.id} at {m.unix_time}" if m else "clock"
    to = ",".join(d.tags) if d.tags else "nobody (recorded)"
    late = " late" if d.late else ""
    return (
        f"decision: {d.reason.value}{late} {d.rule} #{d.incident.id} for {d.device.name} "
        f"({d.device.id}, {d.feed_name}) by {what} -> {to}"
    )
