"""Watch: one task schedules every request to SPOT under its limits and stores what comes.

The limits (SPOT_API.md): per feed, at least `poll_interval` between any two requests
(message pages, paging back and `latest` alike, retries too); between any two requests
at all, at least `feed_spacing`. SPOT sees a request some time after it is sent (a new
connection's TCP and TLS handshakes come first), and before it answers; so both limits
count from a request's answer (or failure) once it is in, and from its sending while it
is in flight. Request times are persisted before each request and again at its end, so
a restart respects them. Feeds are polled earliest-due first, which staggers them and,
when `N x spacing > interval`, stretches the cycle evenly.

Catch-up: SPOT serves 50 messages a page, newest first. When page 1 holds only
messages unseen before it was requested, more may lie beyond it: the feed pages back
(`start=51`, `101`, ...) until a page reaches a message stored before that request,
the 7-day edge, or (at first start) the look-back. New messages arriving between two
requests shift the pages; dedup by id absorbs that, and the sweep only ever moves to
older positions, so nothing that existed when it started is skipped. On busy feeds the
sweep also reads back `LATE_OVERLAP`, because late-arriving messages carry old times.
Page-1 polls alternate with sweep pages so a new HELP is not held up by history. A
sweep's boundary is persisted, so one cut short by a restart or a crash resumes from
`start=51`. A page's malformed (skipped) messages still count towards its 50.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from alerter import masking, metrics
from alerter.clock import Clock, sleep_or_wake
from alerter.errors import FeedBlocked, FeedConfigFault, FeedError, FeedUnavailable, StoreError
from alerter.models import PAGE_SIZE, SPOT_KEEPS, FeedPage, Message
from alerter.settings import FeedConfig, Settings
from alerter.spot.client import FeedSource
from alerter.spot.parse import with_usable_time
from alerter.store import Store

log = logging.getLogger("alerter.watch")

#: How far back a busy feed is re-read for messages that reached SPOT late.
LATE_OVERLAP = 2 * 3600.0
#: A feed SPOT calls misconfigured is retried this rarely (the admins are told).
CONFIG_FAULT_RETRY = 15 * 60.0

Kind = Literal["page", "sweep", "latest"]


def request_deadline(settings: Settings) -> float:
    """The longest one request to SPOT may take (the client's timeout)."""
    return min(settings.request_timeout, settings.poll_interval * 0.9)


def margin(limit: float) -> float:
    """Slack over a limit (0.5 %) for clock granularity; both limits already count from a
    request's end, so network delay cannot bring two requests closer at SPOT."""
    return limit * 0.005


@dataclass
class Cursor:
    """The watcher's working state for one feed."""

    feed: FeedConfig
    last_request: float | None = None
    not_before: float | None = None  # backoff after a failure, or blocked
    busy: bool = False
    synced: bool = False  # its history has been read once
    need_latest: bool = True  # once per process start
    last_kind: Kind | None = None  # the latest request that succeeded
    sweep_start: int | None = None  # next offset while paging back
    sweep_boundary: float | None = None  # messages stored before this end the sweep
    failures: int = 0
    skips_logged: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Slot:
    """The scheduling facts of one feed (the pure planner's input)."""

    feed_id: str
    last_request: float | None
    not_before: float | None
    busy: bool


def plan_next(
    slots: Sequence[Slot], last_any: float | None, interval: float, spacing: float
) -> tuple[str, float] | None:
    """The feed to request next and the earliest time allowed; None if all are busy."""
    best: tuple[float, int, str] | None = None
    for order, s in enumerate(slots):
        if s.busy:
            continue
        due = float("-inf") if s.last_request is None else s.last_request + interval
        if s.last_request is not None:
            due += margin(interval)
        if s.not_before is not None:
            due = max(due, s.not_before)
        if best is None or (due, order) < best[:2]:
            best = (due, order, s.feed_id)
    if best is None:
        return None
    at = best[0]
    if last_any is not None:
        at = max(at, last_any + spacing + margin(spacing))
    return best[2], at


def next_kind(cur: Cursor) -> tuple[Kind, int | None]:
    """Which request a feed makes next: page 1 first, `latest` once, sweep pages between."""
    if cur.last_kind is None:
        return "page", None
    if cur.need_latest:
        return "latest", None
    if cur.sweep_start is not None and cur.last_kind != "sweep":
        return "sweep", cur.sweep_start
    return "page", None


class Watcher:
    """Polls every configured feed within SPOT's limits and stores every message."""

    def __init__(
        self,
        settings: Settings,
        client: FeedSource,
        store: Store,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.clock = clock
        self.on_change = on_change
        # Wall time read once, then moved by the monotonic clock: a forward step of the
        # system clock (NTP) cannot make a request early. Persisted times stay POSIX.
        self._anchor = (clock.now(), clock.monotonic())
        self.cursors: list[Cursor] = []
        self.last_any: float | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        """POSIX seconds as the scheduler counts them: immune to system clock steps."""
        wall, mono = self._anchor
        return wall + (self.clock.monotonic() - mono)

    def load(self) -> None:
        """Read every feed's request history from the store (limits hold across restarts)."""
        now = self.now()
        for feed in self.settings.feeds:
            self.store.ensure_feed(feed.id, now)
        states = self.store.feed_states()
        self.cursors = []
        for feed in self.settings.feeds:
            st = states[feed.id]
            cur = Cursor(
                feed=feed,
                last_request=st.last_request,
                not_before=st.not_before,
                synced=st.synced_at is not None,
                failures=st.failures,
            )
            boundary = self.store.get_meta(_sweep_key(feed.id))
            if boundary:
                # A sweep was cut short: pages shifted since, so it restarts at 51.
                cur.sweep_start, cur.sweep_boundary = PAGE_SIZE + 1, float(boundary)
                log.info("feed %s: resuming an unfinished catch-up", feed.display_name)
            self.cursors.append(cur)
        self.last_any = self.store.last_request_any()
        spacing = self.settings.feed_spacing
        cycle = len(self.cursors) * (spacing + margin(spacing))
        if cycle > self.settings.poll_interval:
            log.warning(
                "%d feeds x %.3gs spacing need %.4gs, more than the %.4gs poll interval: "
                "each feed will be polled about every %.4gs",
                len(self.cursors), self.settings.feed_spacing, cycle,
                self.settings.poll_interval, cycle,
            )  # fmt: skip

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Schedule requests forever (or until `stop` is set)."""
        if not self.cursors:
            self.load()
        stop = stop or asyncio.Event()
        # Setting `stop` ends a wait at once, however far the next request lies.
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                self._wake.clear()
                if any(c.busy for c in self.cursors):
                    # One request at a time: the next starts only after this one ended
                    # (plus the spacing), whatever its connection set-up or SPOT's delay.
                    await self._wake.wait()
                    continue
                plan = plan_next(
                    [Slot(c.feed.id, c.last_request, c.not_before, c.busy) for c in self.cursors],
                    self.last_any,
                    self.settings.poll_interval,
                    self.settings.feed_spacing,
                )
                if plan is None:
                    await self._wake.wait()
                    continue
                feed_id, at = plan
                now = self.now()
                if at > now:
                    await sleep_or_wake(self.clock, at - now, self._wake)
                    continue
                cursor = next(c for c in self.cursors if c.feed.id == feed_id)
                self._start(cursor, now)
        finally:
            stopper.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, cur: Cursor, now: float) -> None:
        kind, start = next_kind(cur)
        try:
            # Persist first, as the latest it could end: a crash (kill -9) while it is in
            # flight must not let the next start count from an earlier end than its own.
            self.store.record_request(cur.feed.id, now + request_deadline(self.settings))
        except StoreError:
            log.exception("cannot record a request time; not polling %s", cur.feed.display_name)
            cur.not_before = now + self.settings.poll_interval
            return
        cur.busy = True
        cur.last_request = now
        self.last_any = now
        task = asyncio.create_task(self._request(cur, kind, start, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, cur: Cursor, kind: Kind, start: int | None, sent_at: float) -> None:
        try:
            page = await self.client.fetch(
                cur.feed, "latest" if kind == "latest" else "message", start=start
            )
            self._succeeded(cur, kind, page, sent_at)
        except FeedError as exc:
            self._failed(cur, exc)
        except StoreError:
            log.exception("feed %s: cannot store its messages", cur.feed.display_name)
            cur.not_before = None
        except Exception:
            # One unexpected fault must not end the watch; log it with context, carry on.
            log.exception("feed %s: unexpected error", cur.feed.display_name)
            self._failed(cur, FeedUnavailable("unexpected error (see log)"))
        finally:
            metrics.SPOT_REQUEST_SECONDS.labels(cur.feed.display_name).observe(self.now() - sent_at)
            self._ended(cur)
            cur.busy = False
            self._wake.set()
            self.on_change()

    def _ended(self, cur: Cursor) -> None:
        """Count both limits from now: SPOT saw the request, if at all, before it ended."""
        done = self.now()
        cur.last_request = max(done, cur.last_request or done)
        self.last_any = max(done, self.last_any or done)
        try:
            self.store.record_request(cur.feed.id, cur.last_request)
        except StoreError:
            log.exception("cannot record a request time of %s", cur.feed.display_name)

    def _succeeded(self, cur: Cursor, kind: Kind, page: FeedPage, sent_at: float) -> None:
        metrics.SPOT_REQUESTS.labels(cur.feed.display_name, metrics.outcome_of(page)).inc()
        now = self.now()
        fid = cur.feed.id
        initial = not cur.synced
        sweep = self._page_one_sweep(cur, page, sent_at, now) if kind == "page" else None
        if sweep is not None:
            # Persisted before the page is stored: a crash in between must not leave
            # the page known and the rest of the overflow forgotten.
            self.store.set_meta(_sweep_key(fid), repr(sweep))
        # A device time that cannot be true (year 10000, milliseconds) becomes the time the
        # message reached the service; the device's value is kept for the alert to show.
        messages = [with_usable_time(m, now) for m in page.messages]
        new = self.store.insert_messages(fid, messages, now, initial=initial)
        metrics.MESSAGES_STORED.labels(cur.feed.display_name).inc(len(new))
        self.store.record_success(fid, now, page.feed_name)
        if cur.failures:
            log.info("feed %s: recovered after %d failures", cur.feed.display_name, cur.failures)
        cur.failures = 0
        cur.not_before = None
        for m in sorted(new, key=lambda m: (m.unix_time, m.id)):
            log.info("feed %s: %s", cur.feed.display_name, describe(m))
        for reason in page.skipped:
            # A bad message stays on the page for days: log it once, not every poll.
            if reason not in cur.skips_logged:
                log.warning("feed %s: skipped %s", cur.feed.display_name, reason)
                cur.skips_logged.add(reason)
        if kind == "latest":
            cur.need_latest = False
        elif kind == "page":
            if sweep is not None:
                if cur.sweep_start is None:
                    log.info("feed %s: page 1 is full; paging back", cur.feed.display_name)
                cur.sweep_start, cur.sweep_boundary = PAGE_SIZE + 1, sweep
            elif cur.sweep_start is None and not cur.synced:
                self._synced(cur, now)
        else:
            self._after_sweep_page(cur, page, now)
        cur.last_kind = kind

    def _page_one_sweep(
        self, cur: Cursor, page: FeedPage, sent_at: float, now: float
    ) -> float | None:
        """The boundary of the sweep page 1 (re)starts (before it is stored), or None."""
        msgs = page.messages
        if _records(page) < PAGE_SIZE:
            return None
        known = self.store.known_before((m.id for m in msgs), sent_at)
        if not known:
            # All unseen: more may lie beyond. New arrivals shifted a sweep in progress
            # past messages it has not read: restart it at 51, keeping its boundary.
            return sent_at if cur.sweep_boundary is None else cur.sweep_boundary
        if cur.sweep_start is not None:
            return None  # a sweep is under way; page 1 holds nothing new
        oldest = min((m.unix_time for m in msgs), default=now)
        if cur.synced and oldest > now - LATE_OVERLAP:
            return sent_at  # recent only: late arrivals may lie beyond
        if not cur.synced and oldest >= now - self.settings.first_start_lookback:
            return sent_at  # a first sync cut short (a restart): read the rest
        return None

    def _after_sweep_page(self, cur: Cursor, page: FeedPage, now: float) -> None:
        assert cur.sweep_start is not None
        assert cur.sweep_boundary is not None
        msgs = page.messages
        oldest = min((m.unix_time for m in msgs), default=None)
        reached_known = bool(self.store.known_before((m.id for m in msgs), cur.sweep_boundary))
        if oldest is None:
            done = False  # nothing usable: only the page's size can end the sweep
        elif cur.synced:
            done = reached_known and oldest < now - LATE_OVERLAP
        else:
            done = oldest < now - self.settings.first_start_lookback
        if done or _records(page) < PAGE_SIZE or (oldest is not None and oldest < now - SPOT_KEEPS):
            log.info(
                "feed %s: paged back to start=%d; caught up",
                cur.feed.display_name, cur.sweep_start,
            )  # fmt: skip
            cur.sweep_start = None
            cur.sweep_boundary = None
            self.store.delete_meta(_sweep_key(cur.feed.id))
            if not cur.synced:
                self._synced(cur, now)
        else:
            cur.sweep_start += PAGE_SIZE

    def _synced(self, cur: Cursor, now: float) -> None:
        cur.synced = True
        self.store.mark_synced(cur.feed.id, now)

    def _failed(self, cur: Cursor, exc: FeedError) -> None:
        metrics.SPOT_REQUESTS.labels(cur.feed.display_name, exc.kind.value).inc()
        now = self.now()
        cur.failures += 1
        if isinstance(exc, FeedBlocked):
            cur.not_before = now + self.settings.blocked_backoff
        elif isinstance(exc, FeedConfigFault):
            cur.not_before = now + max(CONFIG_FAULT_RETRY, self.settings.poll_interval)
        else:
            # At the floor: the limit is the interval, and after an outage every poll not
            # made is a HELP seen later. Polling at the limit is not abuse; only a 403 is.
            cur.not_before = now + self.settings.poll_interval
        try:
            self.store.record_failure(
                cur.feed.id, now, exc.kind, masking.mask(str(exc)), cur.not_before
            )
        except StoreError:
            log.exception("cannot record a failure of feed %s", cur.feed.display_name)
        name = cur.feed.display_name
        if isinstance(exc, FeedBlocked):
            log.error("feed %s: %s; next try in %.0fs", name, exc, cur.not_before - now)
        elif cur.failures == 1:
            # Log an outage once when it starts; recovery is logged once too.
            log.warning("feed %s: %s (%s); retrying", name, exc, exc.kind)
        else:
            log.debug("feed %s: still failing (%d): %s", name, cur.failures, exc)


def _records(page: FeedPage) -> int:
    """How many messages the page held, malformed ones included (they fill its 50 too)."""
    return len({m.id for m in page.messages}) + len(page.skipped)


def _sweep_key(feed_id: str) -> str:
    return f"sweep_boundary:{feed_id}"


def describe(m: Message) -> str:
    """One log line for a message (no secrets: messages carry none)."""
    where = f"{m.latitude:.5f},{m.longitude:.5f}" if m.has_position else "no GPS fix"
    return f"{m.messenger_name} ({m.messenger_id}) {m.type} at {m.unix_time} {where} id={m.id}"
