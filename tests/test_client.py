"""FeedClient: URLs and query, status classification, and every fault mapped to an outcome.

Unit tests use aioresponses (no sockets); the fault tests run the client against the
local SPOT simulator over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr
from yarl import URL

from alerter.clock import FakeClock
from alerter.errors import FeedBlocked, FeedConfigFault, FeedError, FeedUnavailable
from alerter.models import FeedPage, Message
from alerter.settings import FeedConfig
from alerter.sim import Simulator, error_to_xml, to_json, to_xml
from alerter.spot.client import MAX_BODY, FeedClient, classify_status, format_spot_date

BASE = "http://spot.test/feed"
SECRET = "s3cr3t-Pa55"
T0 = 1_700_000_000.0
ANY_URL = re.compile(r"^http://spot\.test/.*$")

FEED = FeedConfig(id="FEED1")
LOCKED = FeedConfig(id="FEED1", password=SecretStr(SECRET))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp's required `stream_writer`; supply a stand-in."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def mock_get(m: aioresponses, **kwargs: Any) -> None:
    m.get(ANY_URL, response_class=MockResponse, **kwargs)


def requested(m: aioresponses) -> list[URL]:
    return [url for (_method, url) in m.requests]


def assert_no_secret(exc: BaseException) -> None:
    """The password appears nowhere an admin or a log could read it."""
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in text, text
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc)
    for arg in exc.args:
        assert SECRET not in str(arg)


# -- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(200, None, id="200-read-body"),
        pytest.param(403, FeedBlocked, id="403-blocked"),
        pytest.param(401, FeedConfigFault, id="401-config"),
        pytest.param(404, FeedConfigFault, id="404-config"),
        pytest.param(500, FeedUnavailable, id="500-transient"),
        pytest.param(502, FeedUnavailable, id="502-transient"),
        pytest.param(503, FeedUnavailable, id="503-transient"),
        pytest.param(429, FeedBlocked, id="429-blocked"),
        pytest.param(400, FeedUnavailable, id="400-transient"),
    ],
)
def test_classify_status(status: int, expected: type[FeedError] | None) -> None:
    error = classify_status(status)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        assert str(status) in str(error)


def test_format_spot_date_uses_minus_0000() -> None:
    assert format_spot_date(0) == "1970-01-01T00:00:00-0000"
    assert format_spot_date(1_341_273_600.9) == "2012-07-03T00:00:00-0000"
    assert "+" not in format_spot_date(T0)


@pytest.mark.parametrize(
    ("base", "fmt", "endpoint", "url"),
    [
        (BASE, "xml", "message", f"{BASE}/FEED1/message.xml"),
        (BASE + "/", "xml", "latest", f"{BASE}/FEED1/latest.xml"),
        (BASE, "json", "message", f"{BASE}/FEED1/message.json"),
    ],
)
async def test_url_shape(
    session: aiohttp.ClientSession, base: str, fmt: Any, endpoint: Any, url: str
) -> None:
    assert FeedClient(session, base, fmt).url("FEED1", endpoint) == url


# -- the query ---------------------------------------------------------------------------


def xml_page(n: int = 1) -> bytes:
    msgs = [
        Message(id=1000 + i, messenger_id="0-1", messenger_name="Anna", unix_time=int(T0) - i,
                type="TRACK", latitude=46.5, longitude=7.9)
        for i in range(n)
    ]  # fmt: skip
    return to_xml(msgs, feed_id="FEED1", feed_name="Alps")


@pytest.mark.parametrize(
    ("start", "query"),
    [
        pytest.param(None, {}, id="no-start"),
        pytest.param(1, {}, id="start-1-is-page-1"),
        pytest.param(0, {}, id="start-0-is-page-1"),
        pytest.param(51, {"start": "51"}, id="start-51"),
        pytest.param(101, {"start": "101"}, id="start-101"),
    ],
)
async def test_start_only_when_beyond_page_one(
    session: aiohttp.ClientSession, start: int | None, query: dict[str, str]
) -> None:
    with aioresponses() as m:
        mock_get(m, body=xml_page())
        page = await FeedClient(session, BASE).fetch(FEED, start=start)
        (url,) = requested(m)
    assert url.with_query(None) == URL(f"{BASE}/FEED1/message.xml")
    assert dict(url.query) == query
    assert [msg.id for msg in page.messages] == [1000]
    assert page.feed_name == "Alps"


async def test_password_and_dates_in_the_query(session: aiohttp.ClientSession) -> None:
    with aioresponses() as m:
        mock_get(m, body=xml_page())
        await FeedClient(session, BASE).fetch(
            LOCKED, "latest", start=51, start_date=T0 - 3600, end_date=T0
        )
        (url,) = requested(m)
    assert url.path == "/feed/FEED1/latest.xml"
    assert dict(url.query) == {
        "start": "51",
        "feedPassword": SECRET,
        "startDate": "2023-11-14T21:13:20-0000",
        "endDate": "2023-11-14T22:13:20-0000",
    }
    # On the wire the dates carry no "+" (it would arrive as a space).
    assert "+" not in url.raw_query_string


async def test_no_password_param_without_a_password(session: aiohttp.ClientSession) -> None:
    with aioresponses() as m:
        mock_get(m, body=xml_page())
        await FeedClient(session, BASE).fetch(FEED)
        (url,) = requested(m)
    assert "feedPassword" not in url.query


# -- outcomes, with the password never in an error -----------------------------------------


def echo_url(prefix: str) -> Callable[..., Awaitable[CallbackResult]]:
    """A server that quotes the requested URL (password included) in its body."""

    async def callback(url: URL, **kwargs: Any) -> CallbackResult:
        full = url.update_query(kwargs.get("params") or {})
        return CallbackResult(
            status=200, body=f"{prefix}{SECRET} {full}".encode(), response_class=MockResponse
        )

    return callback


UNIT_OUTCOMES: list[Any] = [
    pytest.param({"status": 500, "body": "oops"}, FeedUnavailable, "HTTP 500", id="500"),
    pytest.param({"status": 503}, FeedUnavailable, "HTTP 503", id="503"),
    pytest.param({"status": 429}, FeedBlocked, "HTTP 429", id="429"),
    pytest.param({"status": 403}, FeedBlocked, "403", id="403"),
    pytest.param({"status": 401}, FeedConfigFault, "401", id="401"),
    pytest.param({"status": 404}, FeedConfigFault, "404", id="404"),
    pytest.param({"exception": TimeoutError()}, FeedUnavailable, "timed out", id="timeout"),
    pytest.param(
        {"exception": aiohttp.ServerTimeoutError("read timeout")},
        FeedUnavailable,
        "timed out",
        id="server-timeout",
    ),
    pytest.param(
        {
            "exception": aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("spot.test", 80, False, True, None, None, None),
                ConnectionRefusedError(111, "Connection refused"),
            )
        },
        FeedUnavailable,
        "cannot connect",
        id="refused",
    ),
    pytest.param(
        {"exception": aiohttp.ClientPayloadError("Response payload is not completed")},
        FeedUnavailable,
        "truncated",
        id="payload",
    ),
    pytest.param(
        {"exception": aiohttp.ServerDisconnectedError()},
        FeedUnavailable,
        "connection failed",
        id="disconnected",
    ),
    pytest.param(
        {
            "exception": aiohttp.ClientResponseError(
                aiohttp.RequestInfo(
                    URL(f"{BASE}/FEED1/message.xml?feedPassword={SECRET}"), "GET", {}
                ),  # type: ignore[arg-type]
                (),
                status=500,
                message=f"bad {SECRET}",
            )
        },
        FeedUnavailable,
        "connection failed",
        id="response-error-quoting-url",
    ),
    pytest.param(
        {"callback": echo_url("<!DOCTYPE html><html>maintenance for ")},
        FeedUnavailable,
        "HTML",
        id="html-echoing-url",
    ),
    pytest.param(
        {"callback": echo_url("")},
        FeedUnavailable,
        "XML",
        id="garbage-echoing-url",
    ),
    pytest.param(
        {"callback": echo_url("<response><feedMessageResponse>")},
        FeedUnavailable,
        "truncated or invalid XML",
        id="truncated-echoing-url",
    ),
    pytest.param(
        {"body": error_to_xml(None, f"Feed Password required: {SECRET}", "d")},
        FeedConfigFault,
        "Password required",
        id="password-error-quoting-password",
    ),
    pytest.param(
        {"body": error_to_xml("E-0160", "Feed Not Found", "d")},
        FeedConfigFault,
        "E-0160",
        id="notfound",
    ),
    pytest.param(
        {"body": b"", "status": 200},
        FeedUnavailable,
        "empty body",
        id="empty-body",
    ),
]


@pytest.mark.parametrize(("mock", "exc_type", "text"), UNIT_OUTCOMES)
async def test_outcome_and_no_password_in_errors(
    session: aiohttp.ClientSession, mock: dict[str, Any], exc_type: type[FeedError], text: str
) -> None:
    with aioresponses() as m:
        mock_get(m, **mock)
        with pytest.raises(FeedError) as info:
            await FeedClient(session, BASE).fetch(LOCKED)
        (url,) = requested(m)
    assert url.query["feedPassword"] == SECRET  # sent...
    assert type(info.value) is exc_type
    assert text in str(info.value)
    assert_no_secret(info.value)  # ...and never told


async def test_e0195_is_an_empty_page_not_an_error(session: aiohttp.ClientSession) -> None:
    with aioresponses() as m:
        mock_get(m, body=error_to_xml("E-0195", "No Messages to display", "none"))
        page = await FeedClient(session, BASE).fetch(FEED)
    assert page == FeedPage()


async def test_oversized_body_is_refused(session: aiohttp.ClientSession) -> None:
    size = MAX_BODY + 10

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        writer.write(b"<" + b"x" * (size - 1))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FeedUnavailable, match="larger"):
            await FeedClient(session, f"http://127.0.0.1:{port}/feed").fetch(FEED)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "secret", ["s3cr3t-Pa55", "p+ss/w&rd=1 x", "ünï©ode-pass"], ids=["plain", "special", "unicode"]
)
@pytest.mark.parametrize(
    "template",
    [
        "<html>{echo}",  # the whole password inside the quoted excerpt
        "<html>" + "x" * 45 + "{echo}",  # the excerpt would cut it mid-way
        '{{"response": {{"x": "{echo}"',  # invalid JSON sent for XML
        "<response><errors><error><text>Feed Password required {echo}</text></error>"
        "</errors></response>",
    ],
    ids=["html", "clipped", "garbage", "config-fault"],
)
async def test_password_echoed_in_any_spelling_is_masked(
    session: aiohttp.ClientSession, secret: str, template: str
) -> None:
    feed = FeedConfig(id="FEED1", password=SecretStr(secret))
    spellings = {secret, quote(secret, safe=""), quote_plus(secret)}
    for echo in spellings:
        with aioresponses() as m:
            mock_get(m, body=template.format(echo=echo).encode())
            with pytest.raises(FeedError) as info:
                await FeedClient(session, BASE).fetch(feed)
        text = "".join(traceback.format_exception(info.value))
        for spelling in spellings:
            assert spelling not in text
            # Not even the part an excerpt could leave: its first half.
            assert spelling[: len(spelling) // 2 + 1] not in text, text
    if "Password required" in template:
        assert isinstance(info.value, FeedConfigFault)


async def test_a_good_page_quoting_the_password_is_kept_as_is(
    session: aiohttp.ClientSession,
) -> None:
    m = Message(id=7, messenger_id="0-1", messenger_name="Anna", unix_time=int(T0),
                type="CUSTOM", content=f"my pass is {SECRET}")  # fmt: skip
    with aioresponses() as mocked:
        mock_get(mocked, body=to_xml([m], feed_id="FEED1"))
        page = await FeedClient(session, BASE).fetch(LOCKED)
    assert page.messages[0].content == f"my pass is {SECRET}"


async def test_json_format(session: aiohttp.ClientSession) -> None:
    with aioresponses() as m:
        mock_get(m, body=to_json([], feed_id="FEED1"))
        page = await FeedClient(session, BASE, "json").fetch(FEED)
        (url,) = requested(m)
    assert url.path.endswith("/message.json")
    assert page.messages == ()


async def test_cancellation_is_not_swallowed(session: aiohttp.ClientSession) -> None:
    with aioresponses() as m:
        mock_get(m, exception=asyncio.CancelledError())
        with pytest.raises(asyncio.CancelledError):
            await FeedClient(session, BASE).fetch(FEED)


# -- against the simulator over loopback -------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    sim = Simulator(FakeClock(T0))
    feed = sim.add_feed("FEED1", "Alps")
    feed.add_device("0-1", "Anna").track(T0 - 3600, 60, 60)
    sim.add_feed("LOCKED", "Private", password=SECRET).add_device("0-2", "Ben").send(
        "HELP", T0 - 60, 46.0, 7.0
    )
    async with sim:
        yield sim


def client_for(sim: Simulator, session: aiohttp.ClientSession, fmt: Any = "xml",
               timeout: float = 5.0) -> FeedClient:  # fmt: skip
    assert sim.base_url is not None
    return FeedClient(session, sim.base_url, fmt, timeout=timeout)


SIM_FAULTS: list[Any] = [
    pytest.param("500", FeedUnavailable, "HTTP 500", id="500"),
    pytest.param("503", FeedUnavailable, "HTTP 503", id="503"),
    pytest.param("403", FeedBlocked, "403", id="403"),
    pytest.param("truncated", FeedUnavailable, "truncated", id="truncated"),
    pytest.param("html", FeedUnavailable, "HTML", id="html"),
    pytest.param("garbage", FeedUnavailable, "", id="garbage"),
    pytest.param("notfound", FeedConfigFault, "Feed Not Found", id="notfound"),
    pytest.param("password", FeedConfigFault, "Password", id="password"),
]


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize(("fault", "exc_type", "text"), SIM_FAULTS)
async def test_simulator_fault(
    sim: Simulator,
    session: aiohttp.ClientSession,
    fmt: str,
    fault: str,
    exc_type: type[FeedError],
    text: str,
) -> None:
    client = client_for(sim, session, fmt)
    sim.feeds["LOCKED"].fail(fault)
    locked = FeedConfig(id="LOCKED", password=SecretStr(SECRET))
    with pytest.raises(FeedError) as info:
        await client.fetch(locked)
    assert type(info.value) is exc_type
    assert text in str(info.value)
    assert_no_secret(info.value)
    if exc_type is FeedConfigFault:
        assert info.value.kind == "config"
    assert [r.outcome for r in sim.requests] == [fault]
    # The fault is consumed: the next request is served normally.
    page = await client.fetch(locked)
    assert [m.type for m in page.messages] == ["HELP"]
    assert sim.requests[-1].password_sent


async def test_simulator_empty_is_an_empty_page(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.feeds["FEED1"].fail("empty")
    page = await client_for(sim, session).fetch(FEED)
    assert page.messages == ()
    assert page.skipped == ()
    assert sim.requests[-1].outcome == "empty"


async def test_simulator_hang_times_out_quickly(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.feeds["FEED1"].fail("hang")
    began = time.monotonic()
    with pytest.raises(FeedUnavailable, match="timed out"):
        await client_for(sim, session, timeout=0.3).fetch(FEED)
    took = time.monotonic() - began
    assert 0.25 <= took < 5.0
    assert sim.requests[-1].outcome == "hang"


async def test_simulator_unknown_feed_and_wrong_password(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = client_for(sim, session)
    with pytest.raises(FeedConfigFault) as info:
        await client.fetch(FeedConfig(id="NOSUCHFEED"))
    assert info.value.code == "E-0160"
    wrong = FeedConfig(id="LOCKED", password=SecretStr(SECRET + "x"))
    with pytest.raises(FeedConfigFault) as info:
        await client.fetch(wrong)
    assert_no_secret(info.value)
    with pytest.raises(FeedConfigFault):
        await client.fetch(FeedConfig(id="LOCKED"))
    assert [r.outcome for r in sim.requests] == ["notfound", "password", "password"]
    assert [r.password_sent for r in sim.requests] == [False, True, False]


async def test_simulator_paging_latest_and_dates(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = client_for(sim, session)
    first = await client.fetch(FEED)
    second = await client.fetch(FEED, start=51)
    assert (len(first.messages), len(second.messages)) == (50, 10)
    times = [m.unix_time for m in first.messages + second.messages]
    assert times == sorted(times, reverse=True)
    assert len({m.id for m in first.messages + second.messages}) == 60
    assert first.total_count == 60
    beyond = await client.fetch(FEED, start=101)
    assert beyond.messages == ()

    latest = await client.fetch(FEED, "latest")
    assert [m.id for m in latest.messages] == [first.messages[0].id]

    window = await client.fetch(FEED, start_date=T0 - 600, end_date=T0)
    assert window.messages
    assert all(m.unix_time >= T0 - 600 for m in window.messages)
    assert sim.requests[-1].outcome == "data"  # the simulator accepted the date format
    assert [r.start for r in sim.requests] == [None, 51, 101, None, None]


async def test_simulator_json_single_message(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    locked = FeedConfig(id="LOCKED", password=SecretStr(SECRET))
    page = await client_for(sim, session, "json").fetch(locked)
    assert [m.type for m in page.messages] == ["HELP"]


async def test_really_truncated_transfer(session: aiohttp.ClientSession) -> None:
    """A connection closed before Content-Length bytes arrived."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 5000\r\n\r\n"
            b"<response><feedMessageResponse>"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FeedUnavailable) as info:
            await FeedClient(session, f"http://127.0.0.1:{port}/feed").fetch(LOCKED)
        assert "truncated" in str(info.value) or "connection failed" in str(info.value)
        assert_no_secret(info.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(FeedUnavailable, match="cannot connect") as info:
        await FeedClient(session, f"http://127.0.0.1:{port}/feed").fetch(LOCKED)
    assert_no_secret(info.value)
