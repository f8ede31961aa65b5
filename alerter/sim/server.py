"""A local SPOT feed API: scripted devices and messages, served over real HTTP.

Tests, benchmarks and `alerter demo` run the real service against it. It answers
like SPOT does (SPOT_API.md): newest first, 50 a page, `start=51` for the next, the
last 7 days only, error bodies with HTTP 200, one message as a JSON object rather
than a list. Faults are injected per feed or for all feeds and consumed one per
request. All times come from the injected clock; nothing sleeps except `hang`. The
bodies themselves are built in `alerter.sim.bodies`.

    sim = Simulator(clock)
    dev = sim.add_feed("FEED1", "Alps").add_device("0-1234567", "Anna")
    dev.send("HELP", at=clock.now(), lat=46.5, lon=7.9)
    async with sim:                    # sim.base_url: http://127.0.0.1:PORT/feed
        ...                            # GET {base_url}/FEED1/message.json
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, Self

from aiohttp import web

from alerter.clock import Clock
from alerter.models import PAGE_SIZE, Message
from alerter.sim.bodies import (
    CONTENT_TYPES,
    DAYS_RANGE,
    echo_body,
    empty_body,
    notfound_body,
    page_body,
    password_body,
)
from alerter.spot.parse import format_spot_datetime, parse_spot_datetime

__all__ = [
    "FAULT_KINDS",
    "FIRST_ID",
    "SimDevice",
    "SimFeed",
    "SimRequest",
    "Simulator",
    "check_fault",
]

#: What `fail` and `fail_all` accept.
FAULT_KINDS = frozenset(
    {
        "500", "503", "403", "hang", "truncated", "html", "garbage", "empty", "notfound",
        "password", "echo",
    }
)  # fmt: skip

#: A message older than this (seconds before now) is out of the feed, as on SPOT.
_WINDOW = DAYS_RANGE * 86_400

#: Where generated message ids start (real ones passed 1.76e9 in 2022).
FIRST_ID = 1_800_000_000

_MAINTENANCE_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Scheduled Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>SPOT is undergoing scheduled maintenance. "
    b"Please try again later.</p></body></html>\n"
)


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request the simulator received, as it answered it."""

    at: float  # clock time at arrival
    mono: float  # time.monotonic() at arrival, for real gaps between requests
    feed_id: str
    endpoint: str  # "message" | "latest"
    fmt: str  # "xml" | "json"
    start: int | None
    query: dict[str, str]  # without feedPassword
    status: int  # HTTP status sent; 0 when nothing was sent (hang)
    outcome: str  # data, empty, notfound, password, blocked, badrequest, or the fault kind
    password_sent: bool = False


@dataclass(frozen=True, slots=True)
class _Scripted:
    message: Message
    visible_at: float


class SimDevice:
    """One scripted messenger; its messages go into its feed."""

    def __init__(self, feed: SimFeed, messenger_id: str, name: str, model: str) -> None:
        self.feed = feed
        self.messenger_id = messenger_id
        self.name = name
        self.model = model

    def send(
        self,
        type: str,
        at: float,
        lat: float | None = None,
        lon: float | None = None,
        *,
        battery: str | None = "GOOD",
        content: str | None = None,
        altitude: int | None = 0,
        visible_at: float | None = None,
    ) -> Message:
        """Schedule one message at `at`, visible in the feed from `visible_at` (default `at`)."""
        unix_time = int(at)
        msg = Message(
            id=self.feed.sim.next_id(),
            messenger_id=self.messenger_id,
            messenger_name=self.name,
            unix_time=unix_time,
            type=type,
            # SPOT gives 5 decimals; rounding here keeps the returned Message equal to
            # what a parser reads back.
            latitude=None if lat is None else round(lat, 5),
            longitude=None if lon is None else round(lon, 5),
            altitude=altitude,
            model_id=self.model,
            battery=battery,
            content=content,
            date_time=format_spot_datetime(unix_time),
        )
        self.feed.schedule(msg, at if visible_at is None else visible_at)
        return msg

    def track(
        self,
        start: float,
        every: float,
        count: int,
        type: str = "TRACK",
        lat: float = 46.5,
        lon: float = 7.9,
        step: float = 0.001,
        *,
        battery: str | None = "GOOD",
        altitude: int | None = 0,
    ) -> list[Message]:
        """A moving device: `count` messages `every` seconds from `start`, `step` degrees apart."""
        return [
            self.send(
                type,
                start + i * every,
                lat + i * step,
                lon + i * step,
                battery=battery,
                altitude=altitude,
            )
            for i in range(count)
        ]

    def repeat(
        self,
        type: str,
        start: float,
        every: float,
        count: int,
        lat: float | None = None,
        lon: float | None = None,
        *,
        battery: str | None = "GOOD",
        content: str | None = None,
        altitude: int | None = 0,
    ) -> list[Message]:
        """The same message `count` times, `every` seconds apart (a HELP repeats every ~5 min)."""
        return [
            self.send(
                type,
                start + i * every,
                lat,
                lon,
                battery=battery,
                content=content,
                altitude=altitude,
            )
            for i in range(count)
        ]


class SimFeed:
    """One scripted feed (a SPOT shared page): devices, messages, faults, a block."""

    def __init__(self, sim: Simulator, feed_id: str, name: str, password: str | None) -> None:
        self.sim = sim
        self.id = feed_id
        self.name = name
        self.password = password
        self.devices: dict[str, SimDevice] = {}
        self.blocked = False
        self._scripted: list[_Scripted] = []
        self._ordered: list[_Scripted] | None = []  # newest first; None: to re-sort
        self._faults: deque[str] = deque()
        self._raw: deque[bytes] = deque()

    @property
    def messages(self) -> list[Message]:
        """Every scripted message, in script order (visible or not)."""
        return [s.message for s in self._scripted]

    def add_device(
        self, messenger_id: str, name: str | None = None, model: str = "SPOT3"
    ) -> SimDevice:
        """Add a messenger; its name defaults to its id, as SPOT shows an unnamed one."""
        device = SimDevice(self, messenger_id, messenger_id if name is None else name, model)
        self.devices[messenger_id] = device
        return device

    def schedule(self, message: Message, visible_at: float) -> None:
        """Put a ready-made message into the feed, visible from `visible_at`."""
        self._scripted.append(_Scripted(message, visible_at))
        self._ordered = None

    def fail(self, kind: str, times: int = 1) -> None:
        """Answer this feed's next `times` requests with the fault `kind`."""
        self._faults.extend([check_fault(kind)] * times)

    def serve_raw(self, body: bytes, times: int = 1) -> None:
        """Answer this feed's next `times` requests with `body` as it is (HTTP 200): a
        page no scripted message can make (a huge number, an absurd time)."""
        self._raw.extend([body] * times)

    def take_raw(self) -> bytes | None:
        """Consume this feed's next queued raw body, if any."""
        return self._raw.popleft() if self._raw else None

    def block(self) -> None:
        """Answer every request of this feed with 403 until `unblock`."""
        self.blocked = True

    def unblock(self) -> None:
        """Serve this feed again."""
        self.blocked = False

    def visible(self, now: float) -> list[Message]:
        """What the feed shows at `now`: arrived, within 7 days, newest first."""
        if self._ordered is None:
            # Ties on unixTime: the higher id first.
            self._ordered = sorted(
                self._scripted, key=lambda s: (s.message.unix_time, s.message.id), reverse=True
            )
        oldest = now - _WINDOW
        out: list[Message] = []
        for s in self._ordered:
            if s.message.unix_time < oldest:
                break
            if s.visible_at <= now:
                out.append(s.message)
        return out

    def take_fault(self) -> str | None:
        """Consume this feed's next queued fault, if any."""
        return self._faults.popleft() if self._faults else None


def check_fault(kind: str) -> str:
    """The fault kind, or ValueError for one the simulator does not know."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    return kind


@dataclass(slots=True)
class _Answer:
    status: int
    outcome: str
    body: bytes
    content_type: str
    hang: bool = False


class Simulator:
    """A local SPOT feed API over aiohttp: `start()` it and point the client at `base_url`."""

    #: How long a "hang" fault holds a request at most (real seconds).
    hang_limit: float = 60.0

    def __init__(self, clock: Clock, *, shuffled_ids: bool = False, seed: int = 0) -> None:
        self.clock = clock
        self.shuffled_ids = shuffled_ids
        self.feeds: dict[str, SimFeed] = {}
        self.requests: list[SimRequest] = []
        self.base_url: str | None = None
        self._faults: deque[str] = deque()
        self._id_rng = random.Random(seed)  # noqa: S311 -- test data, not secrets
        self._garbage_rng = random.Random(seed + 1)  # noqa: S311 -- test data
        self._last_id = FIRST_ID
        self._used_ids: set[int] = set()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # -- scripting ---------------------------------------------------------------------

    def add_feed(
        self, feed_id: str, name: str | None = None, password: str | None = None
    ) -> SimFeed:
        """Add a feed; its name defaults to its id."""
        feed = SimFeed(self, feed_id, feed_id if name is None else name, password)
        self.feeds[feed_id] = feed
        return feed

    def fail_all(self, kind: str, times: int = 1) -> None:
        """Answer the next `times` requests of any feed with the fault `kind`."""
        self._faults.extend([check_fault(kind)] * times)

    def next_id(self) -> int:
        """A new unique message id: increasing, or in random order with `shuffled_ids`."""
        if self.shuffled_ids:
            # Real ids are not time-ordered: a later id can carry an earlier time.
            while True:
                candidate = FIRST_ID + self._id_rng.randrange(1_000_000_000)
                if candidate not in self._used_ids:
                    break
        else:
            candidate = self._last_id + 1 + self._id_rng.randrange(1000)
            self._last_id = candidate
        self._used_ids.add(candidate)
        return candidate

    # -- serving -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application serving `/feed/{id}/message|latest.xml|json`."""
        app = web.Application()
        app.router.add_get(
            r"/feed/{feed_id}/{endpoint:message|latest}.{fmt:xml|json}", self._handle
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); return the base URL for the client."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._closing = asyncio.Event()
        # handler_cancellation: a client giving up ends a "hang" at once.
        runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.base_url = f"http://{shown}:{bound_port}/feed"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; requests still hanging are dropped unanswered."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        feed_id = request.match_info["feed_id"]
        endpoint = request.match_info["endpoint"]
        fmt = request.match_info["fmt"]
        query = dict(request.query)
        password = query.pop("feedPassword", None)
        start = _parse_start(query.get("start"))
        answer = self._answer(feed_id, endpoint, fmt, request.query)
        self.requests.append(
            SimRequest(
                at=self.clock.now(),
                mono=time.monotonic(),
                feed_id=feed_id,
                endpoint=endpoint,
                fmt=fmt,
                start=start,
                query=query,
                status=answer.status,
                outcome=answer.outcome,
                password_sent=password is not None,
            )
        )
        if answer.hang:
            await self._hang(request)
        return web.Response(
            status=answer.status, body=answer.body, content_type=answer.content_type
        )

    async def _hang(self, request: web.Request) -> NoReturn:
        """Hold the request until the client leaves, the simulator stops or hang_limit."""
        # Polling the transport also notices a client leaving when the app runs under
        # another runner (without handler_cancellation); 20 ms costs nothing.
        deadline = time.monotonic() + self.hang_limit
        while (
            not self._closing.is_set()
            and time.monotonic() < deadline
            and request.transport is not None
            and not request.transport.is_closing()
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 0.02)
        # Drop the connection without a word, as a dead upstream would; ending the
        # handler as cancelled is what aiohttp itself does when a client leaves.
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError

    def _answer(self, feed_id: str, endpoint: str, fmt: str, query: Mapping[str, str]) -> _Answer:
        """Decide the response to one request (no I/O; consumes a queued fault)."""
        feed = self.feeds.get(feed_id)
        if feed is not None and feed.blocked:
            return _Answer(403, "blocked", b"403 Forbidden", "text/plain")
        fault = feed.take_fault() if feed is not None else None
        if fault is None and self._faults:
            fault = self._faults.popleft()
        ctype = CONTENT_TYPES[fmt]
        raw = feed.take_raw() if feed is not None and fault is None else None
        if raw is not None:
            return _Answer(200, "raw", raw, ctype)
        if fault is None:
            return self._normal(feed, feed_id, endpoint, fmt, query)
        match fault:
            case "500":
                return _Answer(500, fault, b"500 Internal Server Error", "text/plain")
            case "503":
                return _Answer(503, fault, b"503 Service Unavailable", "text/plain")
            case "403":
                return _Answer(403, fault, b"403 Forbidden", "text/plain")
            case "hang":
                return _Answer(0, fault, b"", "text/plain", hang=True)
            case "html":
                return _Answer(200, fault, _MAINTENANCE_HTML, "text/html")
            case "garbage":
                # Never valid XML or JSON: a NUL byte first.
                body = b"\x00" + self._garbage_rng.randbytes(255)
                return _Answer(200, fault, body, ctype)
            case "truncated":
                whole = self._normal(feed, feed_id, endpoint, fmt, query).body
                return _Answer(200, fault, whole[: len(whole) // 2], ctype)
            case "empty":
                return _Answer(200, fault, empty_body(feed_id, fmt), ctype)
            case "notfound":
                return _Answer(200, fault, notfound_body(feed_id, fmt), ctype)
            case "echo":
                return _Answer(200, fault, echo_body(fmt, query), ctype)
            case _:  # "password"
                return _Answer(200, fault, password_body(feed_id, fmt), ctype)

    def _normal(
        self,
        feed: SimFeed | None,
        feed_id: str,
        endpoint: str,
        fmt: str,
        query: Mapping[str, str],
    ) -> _Answer:
        ctype = CONTENT_TYPES[fmt]
        if feed is None:
            return _Answer(200, "notfound", notfound_body(feed_id, fmt), ctype)
        if feed.password is not None and query.get("feedPassword") != feed.password:
            return _Answer(200, "password", password_body(feed_id, fmt), ctype)
        now = self.clock.now()
        msgs = feed.visible(now)
        if endpoint == "latest":
            seen: set[str] = set()
            latest: list[Message] = []
            for m in msgs:
                if m.messenger_id not in seen:
                    seen.add(m.messenger_id)
                    latest.append(m)
            msgs = latest
        else:
            try:
                lo = _parse_date(query.get("startDate"))
                hi = _parse_date(query.get("endDate"))
                start = _parse_start(query.get("start"), strict=True)
            except ValueError as exc:
                return _Answer(400, "badrequest", f"400 Bad Request: {exc}".encode(), "text/plain")
            if lo is not None or hi is not None:
                msgs = [
                    m
                    for m in msgs
                    if (lo is None or m.unix_time >= lo) and (hi is None or m.unix_time <= hi)
                ]
            total = len(msgs)
            offset = max(1, start or 1) - 1
            page = msgs[offset : offset + PAGE_SIZE]
            if not page:
                return _Answer(200, "empty", empty_body(feed_id, fmt), ctype)
            return _Answer(
                200,
                "data",
                page_body(fmt, page, feed_id=feed.id, feed_name=feed.name, total=total),
                ctype,
            )
        if not msgs:
            return _Answer(200, "empty", empty_body(feed_id, fmt), ctype)
        return _Answer(
            200,
            "data",
            page_body(fmt, msgs, feed_id=feed.id, feed_name=feed.name, total=len(msgs)),
            ctype,
        )


def _parse_start(raw: str | None, *, strict: bool = False) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        if strict:
            raise ValueError(f"bad start {raw!r}") from None
        return None


def _parse_date(raw: str | None) -> int | None:
    if raw is None:
        return None
    bad = ValueError(f"bad date {raw!r}; expected YYYY-MM-DDTHH:MM:SS-0000")
    # parse_spot_datetime forgives padding, as a parser of SPOT's text should; a request
    # carrying it has a client bug that the simulator must answer with 400.
    if raw != raw.strip():
        raise bad
    try:
        return parse_spot_datetime(raw)
    except ValueError:
        # e.g. "+0000" sent unencoded: the "+" arrives as a space.
        raise bad from None
