"""The composition root: builds watch -> store -> process -> outbox, and runs them.

Three tasks share one SQLite store and wake each other with events:
- the watcher (`watch`) polls SPOT within its limits and stores new messages;
- the processor (`process`) runs the engine on unprocessed messages and on the clock,
  and commits its decisions, the processed marks and the outbox rows in one transaction;
- the sender (`outbox`) delivers the outbox.
Notices for the admins are raised through one `AdminNotices`. Signals: SIGTERM/SIGINT
stop cleanly (sends in flight get a grace period, the rest stay in the outbox); SIGHUP
reloads the rules and the Apprise config, keeping the old ones when the new ones are
invalid, and hands the new ones to each task.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

from alerter.ack import AckStatus, incident_for_token, load_key, verify
from alerter.admin import AdminNotices, StateWatch
from alerter.clock import Clock, SystemClock, sleep_or_wake
from alerter.config import Config, load_config
from alerter.errors import ConfigError, StoreError
from alerter.heartbeat import Heartbeat
from alerter.models import AdminKind, AdminNotice, DeliveryState
from alerter.notify import AppriseNotifier, Notifier
from alerter.outbox import Sender
from alerter.process import Processor
from alerter.retention import Pruner
from alerter.settings import Settings
from alerter.spot.client import FeedClient, FeedSource
from alerter.store import Store
from alerter.systemd import SystemdNotifier, describe_status
from alerter.vitals import Health, Vitals, verdict
from alerter.watch import Watcher, request_deadline
from alerter.web import WebServer
from alerter.web.ack import AckResult, IncidentView, Position, TakeStatus, Told

log = logging.getLogger("alerter.service")


class AckDeskOverProcessor:
    """The acknowledge pages' desk (`alerter.web.ack.AckDesk`): tokens from `alerter.ack`,
    the incident from the store, and `Processor.acknowledge` for the one way to take it."""

    def __init__(self, key: bytes, store: Store, processor: Processor) -> None:
        self.key = key
        self.store = store
        self.processor = processor

    def view(self, token: str) -> IncidentView | None:
        """The incident behind a token: None when forged, altered, unknown or resolved."""
        found = incident_for_token(self.key, token, self.store)
        if found is None:
            return None
        inc, _tag = found
        dev = self.store.devices().get(inc.device_id)
        rule = self.processor.config.rules.by_name.get(inc.rule)
        track = self.store.track(inc.device_id, inc.started_at - LAST_POSITIONS_SPAN, None)
        last = dev.last.message if dev and dev.last else None
        return IncidentView(
            incident_id=inc.id or 0,
            who=dev.name if dev else inc.device_id,
            what=rule.subject if rule else inc.rule,
            since=inc.started_at,
            state=inc.state,
            feed=self.processor.feed_names().get(dev.feed_id, "") if dev else "",
            positions=tuple(
                Position(
                    r.message.unix_time, r.message.latitude, r.message.longitude, r.message.type
                )
                for r in reversed(track[-LAST_POSITIONS:])
            ),
            told=tuple(
                Told(
                    d.sent_at or d.created_at,
                    d.label,
                    d.title.split(":")[0],
                    d.state is DeliveryState.SENT,
                )
                for d in self.store.deliveries_of([inc.id or 0])
            ),
            text=last.content if last else None,
            battery=last.battery if last else None,
            taken_by=inc.acknowledged_by,
            taken_at=inc.acknowledged_at,
        )

    def take(self, token: str, name: str) -> AckResult:
        """Acknowledge the token's incident (idempotent); the processor wakes the sender."""
        found = verify(self.key, token)
        if found is None:
            return AckResult(TakeStatus.NOT_OPEN)
        incident_id, tag = found
        out = self.processor.acknowledge(incident_id, name, f"web:{tag}")
        status = {
            AckStatus.ACKNOWLEDGED: TakeStatus.TAKEN,
            AckStatus.ALREADY: TakeStatus.ALREADY,
        }.get(out.status, TakeStatus.NOT_OPEN)
        return AckResult(status, out.by, out.at)


#: How long in-flight sends may finish after a stop signal.
STOP_GRACE = 10.0
#: The acknowledge page shows the device's last positions: at most this many, from at
#: most this long before the incident began.
LAST_POSITIONS = 5
LAST_POSITIONS_SPAN = 6 * 3600.0
#: A notification undelivered this long means the outbox is stuck (the service is blind).
OUTBOX_STUCK_AFTER = 15 * 60.0
#: How often the state's disk is probed (at most; at least once a poll interval).
STATE_PROBE = 30.0


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One service per state directory: a second `alerter run` would poll twice as fast."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state_dir / "alerter.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot use the state directory {state_dir}: {exc.strerror or exc} "
            "(it must be writable by the service)"
        ) from None
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
        feed_source: FeedSource | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.feed_source = feed_source
        self.stop_event = asyncio.Event()
        notifier = notifier or AppriseNotifier()
        # The notices wake the sender, which is built next and raises these notices.
        self.admin = AdminNotices(
            store, self.clock, config.targets, admin_tag=settings.admin_tag,
            zone=settings.zone, queued=lambda: self.sender.wake.set(),  # noqa: PLW0108
        )  # fmt: skip
        self.sender = Sender(store, config.targets, notifier, self.clock, self.admin)
        self.vitals = Vitals(started_at=self.clock.now())
        # Signs acknowledgement links; generated once into the state dir when not set.
        self.ack_key = load_key(settings.secret_key, settings.state_dir)
        self.processor = Processor(
            settings, config, store, self.clock,
            raise_notice=self.admin, queued=self.sender.wake.set, vitals=self.vitals,
            ack_key=self.ack_key,
        )  # fmt: skip
        self.state_watch = StateWatch(
            store, self.clock, self.admin, notifier,
            every=min(STATE_PROBE, settings.poll_interval), vitals=self.vitals,
        )  # fmt: skip
        self.ack_desk = AckDeskOverProcessor(self.ack_key, store, self.processor)
        self.web = WebServer(
            settings, store, self.clock, self.health, ack_desk=self.ack_desk, key=self.ack_key
        )
        url = settings.heartbeat_url
        self.heartbeat = Heartbeat(
            url.get_secret_value() if url else None, self.health, self.clock,
            interval=settings.poll_interval,
        )  # fmt: skip
        self.systemd = SystemdNotifier(
            self.health, self.clock,
            ready=lambda: self.vitals.last_cycle is not None,
            status=lambda h: describe_status(len(settings.feeds), len(store.incidents()), h),
        )  # fmt: skip

    def health(self) -> Health:
        """Is the service alive and seeing, now (`alerter.vitals`)."""
        return verdict(
            self.vitals,
            self.clock.now(),
            interval=self.settings.poll_interval,
            stuck_after=OUTBOX_STUCK_AFTER,
        )

    def reload(self) -> bool:
        """Load rules and targets again; on a fault keep the old ones and tell the admins."""
        try:
            config = load_config(self.settings)
        except Exception as exc:  # whatever a file holds, the old rules stay and admins hear
            problems = exc.problems if isinstance(exc, ConfigError) else [exc]
            detail = "\n".join(str(p) for p in problems[:10])
            log.error(  # noqa: TRY400 (the problems are the message; no traceback helps)
                "reload rejected; keeping the previous rules and targets:\n%s", detail
            )
            self.admin(
                AdminNotice(AdminKind.RULES_REJECTED, str(self.settings.rules), detail,
                            self.clock.now())
            )  # fmt: skip
            return False
        self.config = config
        self.admin.use(config.targets)
        self.sender.use(config.targets)
        self.processor.use(config)
        log.info(
            "reloaded: %d rules, %d targets", len(config.rules.rules), len(config.targets.targets)
        )
        return True

    def stop(self) -> None:
        """Ask every task to finish."""
        self.stop_event.set()
        self.processor.changed.set()
        self.sender.wake.set()

    @contextlib.asynccontextmanager
    async def _feed_source(self) -> AsyncIterator[FeedSource]:
        """The injected feed source, or the SPOT client on its own HTTP session."""
        if self.feed_source is not None:
            yield self.feed_source
            return
        async with aiohttp.ClientSession() as session:
            yield FeedClient(
                session,
                self.settings.spot_base_url,
                self.settings.feed_format,
                timeout=request_deadline(self.settings),
            )

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until stopped."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.systemd.around_reload(self.reload))
        # Beside the pipeline, from the start: a service blind at start still says so.
        beside = (
            asyncio.create_task(self.systemd.run(self.stop_event), name="systemd"),
            asyncio.create_task(self.heartbeat.run(self.stop_event), name="heartbeat"),
        )
        try:
            # The web server first: /healthz answers (503) even while blind at start.
            async with self.web.serving():
                await self.state_watch.check()
                while not self.state_watch.writable and not self.stop_event.is_set():
                    # Blind from the start: the admins were told; start once the disk works.
                    await sleep_or_wake(self.clock, self.state_watch.every, self.stop_event)
                    await self.state_watch.check()
                if not self.stop_event.is_set():
                    await self._run_tasks()
        finally:
            self.stop_event.set()
            for task in beside:
                task.cancel()
            await asyncio.gather(*beside, return_exceptions=True)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        log.info("stopped")

    async def _run_tasks(self) -> None:
        self.store.set_meta("started_at", repr(self.processor.started_at))
        log.info(
            "watching %d feeds every %.4gs (spacing %.4gs); %d rules; %d targets",
            len(self.settings.feeds), self.settings.poll_interval, self.settings.feed_spacing,
            len(self.config.rules.rules), len(self.config.targets.targets),
        )  # fmt: skip
        async with self._feed_source() as source:
            watcher = Watcher(
                self.settings, source, self.store, self.clock, self.processor.changed.set
            )
            watcher.load()
            watching = asyncio.create_task(watcher.run(self.stop_event), name="watch")
            processing = asyncio.create_task(self.processor.run(self.stop_event), name="process")
            sending = asyncio.create_task(self.sender.run(self.stop_event), name="send")
            probing = asyncio.create_task(self.state_watch.run(self.stop_event), name="state")
            pruner = Pruner(
                self.store, self.clock, self.settings.retention,
                lookback=self.settings.first_start_lookback,
            )  # fmt: skip
            pruning = asyncio.create_task(pruner.run(self.stop_event), name="prune")
            tasks = (watching, processing, sending, probing, pruning)
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
                watching.cancel()
                probing.cancel()
                pruning.cancel()
                _, pending = await asyncio.wait((processing, sending), timeout=STOP_GRACE)
                for task in pending:
                    log.warning("stopping: %s did not finish in time; its sends stay queued",
                                task.get_name())  # fmt: skip
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
