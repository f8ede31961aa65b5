"""The SPOT simulator, over real loopback HTTP, against what the real API does."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest
import yarl

from alerter.clock import FakeClock
from alerter.errors import FeedConfigFault, FeedUnavailable
from alerter.models import NO_POSITION, Message
from alerter.sim import (
    FIRST_ID,
    SimFeed,
    Simulator,
    error_to_json,
    error_to_xml,
    to_json,
    to_xml,
)
from alerter.spot.parse import format_spot_datetime, parse_feed

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1_700_000_000.0
DAY = 86_400


def spot_date(t: float) -> str:
    """startDate / endDate as SPOT wants them."""
    return format_spot_datetime(t, "-0000")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    async with Simulator(clock) as sim:
        yield sim


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Reply:
    """One HTTP answer, read whole."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def feed_response(self) -> dict[str, Any]:
        resp: dict[str, Any] = self.json()["response"]["feedMessageResponse"]
        return resp

    def messages(self) -> list[dict[str, Any]]:
        """The page's messages as a list, whatever SPOT's quirk made of them."""
        listed = self.feed_response()["messages"]["message"]
        return listed if isinstance(listed, list) else [listed]

    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.json()["response"]["errors"]["error"]
        return err


async def get(
    session: aiohttp.ClientSession,
    sim: Simulator,
    feed_id: str,
    path: str = "message.json",
    **params: str,
) -> Reply:
    async with session.get(f"{sim.base_url}/{feed_id}/{path}", params=params) as resp:
        return Reply(resp.status, resp.content_type, await resp.read())


async def arrival(sim: Simulator) -> None:
    """Wait (for real, briefly) until the simulator has logged a request."""
    for _ in range(500):
        if sim.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no request arrived")


def help_feed(sim: Simulator, feed_id: str = "FEED1", **kwargs: Any) -> SimFeed:
    return sim.add_feed(feed_id, "Alps", **kwargs)


# --- visibility and ordering --------------------------------------------------------


async def test_message_becomes_visible_at_its_time(
    sim: Simulator, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    dev = help_feed(sim).add_device("0-1234567", "Anna")
    sent = dev.send("OK", T0 + 60, 46.5, 7.9)

    assert (await get(session, sim, "FEED1")).error()["code"] == "E-0195"
    clock.advance(60)
    reply = await get(session, sim, "FEED1")
    assert [m["id"] for m in reply.messages()] == [sent.id]
    assert sent.unix_time == int(T0 + 60)


async def test_late_message_keeps_its_old_time_and_sorts_below_newer(
    sim: Simulator, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    dev = help_feed(sim).add_device("0-1234567")
    late = dev.send("HELP", T0 - 3600, 46.5, 7.9, visible_at=T0 + 600)
    recent = dev.send("TRACK", T0 - 60, 46.6, 7.9)

    assert [m["id"] for m in (await get(session, sim, "FEED1")).messages()] == [recent.id]
    clock.advance(600)
    reply = await get(session, sim, "FEED1")
    assert [(m["id"], m["unixTime"]) for m in reply.messages()] == [
        (recent.id, int(T0 - 60)),
        (late.id, int(T0 - 3600)),
    ]


async def test_same_time_higher_id_first(sim: Simulator, session: aiohttp.ClientSession) -> None:
    dev = help_feed(sim).add_device("0-1")
    first = dev.send("OK", T0 - 10, 1.0, 2.0)
    second = dev.send("CUSTOM", T0 - 10, 1.0, 2.0)
    assert second.id > first.id
    ids = [m["id"] for m in (await get(session, sim, "FEED1")).messages()]
    assert ids == [second.id, first.id]


async def test_paging_120_messages(sim: Simulator, session: aiohttp.ClientSession) -> None:
    dev = help_feed(sim).add_device("0-1")
    sent = dev.track(start=T0 - 120 * 60, every=60, count=120)

    pages = [await get(session, sim, "FEED1", start=str(s)) for s in (1, 51, 101)]
    assert [len(p.messages()) for p in pages] == [50, 50, 20]
    assert [p.feed_response()["count"] for p in pages] == [50, 50, 20]
    assert {p.feed_response()["totalCount"] for p in pages} == {120}
    ids = [m["id"] for p in pages for m in p.messages()]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {m.id for m in sent}
    times = [m["unixTime"] for p in pages for m in p.messages()]
    assert times == sorted(times, reverse=True)
    # No start is the first page; past the end there is nothing to display.
    assert (await get(session, sim, "FEED1")).messages() == pages[0].messages()
    assert (await get(session, sim, "FEED1", start="121")).error()["code"] == "E-0195"


async def test_seven_day_edge(
    sim: Simulator, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    dev = help_feed(sim).add_device("0-1")
    edge = dev.send("OK", T0 - 7 * DAY, 1.0, 2.0)
    dev.send("OK", T0 - 7 * DAY - 1, 1.0, 2.0)

    assert [m["id"] for m in (await get(session, sim, "FEED1")).messages()] == [edge.id]
    clock.advance(1)
    assert (await get(session, sim, "FEED1")).error()["code"] == "E-0195"


async def test_latest_gives_the_newest_of_each_device(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    feed = help_feed(sim)
    anna, ben = feed.add_device("0-1", "Anna"), feed.add_device("0-2", "Ben", model="SPOT2")
    anna_last = anna.track(T0 - 3600, 600, 5)[-1]
    ben_last = ben.track(T0 - 7200, 300, 4)[-1]
    anna.send("OK", T0 + 60, 1.0, 2.0)  # not yet visible

    for fmt in ("json", "xml"):
        reply = await get(session, sim, "FEED1", f"latest.{fmt}")
        assert reply.status == 200
    reply = await get(session, sim, "FEED1", "latest.json")
    assert [(m["messengerId"], m["id"]) for m in reply.messages()] == [
        ("0-1", anna_last.id),
        ("0-2", ben_last.id),
    ]
    assert reply.messages()[1]["modelId"] == "SPOT2"


async def test_latest_of_one_device_is_an_object_and_empty_is_e0195(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    feed = help_feed(sim)
    assert (await get(session, sim, "FEED1", "latest.json")).error()["code"] == "E-0195"
    feed.add_device("0-1").track(T0 - 600, 60, 3)
    reply = await get(session, sim, "FEED1", "latest.json")
    assert isinstance(reply.feed_response()["messages"]["message"], dict)


# --- date window ----------------------------------------------------------------------


async def test_start_and_end_date_filter_by_unix_time(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sent = help_feed(sim).add_device("0-1").track(T0 - 10 * 3600, 3600, 10)
    lo, hi = sent[3].unix_time, sent[6].unix_time

    reply = await get(session, sim, "FEED1", startDate=spot_date(lo), endDate=spot_date(hi))
    assert [m["id"] for m in reply.messages()] == [m.id for m in reversed(sent[3:7])]
    assert reply.feed_response()["totalCount"] == 4

    only_start = await get(session, sim, "FEED1", startDate=spot_date(hi))
    assert [m["id"] for m in only_start.messages()] == [m.id for m in reversed(sent[6:])]
    # An encoded "+" is a valid offset too.
    plus = await get(session, sim, "FEED1", startDate=spot_date(hi).replace("-0000", "+0000"))
    assert plus.messages() == only_start.messages()
    future = await get(session, sim, "FEED1", startDate=spot_date(T0 + 60))
    assert future.error()["code"] == "E-0195"


async def test_unencoded_plus_in_date_is_400(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    help_feed(sim).add_device("0-1").track(T0 - 600, 60, 3)
    raw = f"{sim.base_url}/FEED1/message.xml?startDate=2023-11-14T00:00:00+0000"
    async with session.get(yarl.URL(raw, encoded=True)) as resp:
        assert resp.status == 400
    reply = await get(session, sim, "FEED1", startDate="yesterday")
    assert reply.status == 400
    assert [r.outcome for r in sim.requests] == ["badrequest", "badrequest"]


# --- shapes -----------------------------------------------------------------------------


async def test_json_single_message_is_an_object(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    dev = help_feed(sim).add_device("0-1234567", "Anna")
    dev.send("HELP", T0 - 60, 46.51234, 7.91234, content="Need help")

    reply = await get(session, sim, "FEED1")
    assert reply.content_type == "application/json"
    message = reply.feed_response()["messages"]["message"]
    assert isinstance(message, dict)
    assert message["messageType"] == "HELP"
    assert message["@clientUnixTime"] == "0"
    assert isinstance(message["id"], int)
    assert isinstance(message["latitude"], float)
    assert message["messageContent"] == "Need help"

    dev.send("TRACK", T0 - 30, 46.5, 7.9)
    assert isinstance(
        (await get(session, sim, "FEED1")).feed_response()["messages"]["message"], list
    )


async def test_json_shape_matches_a_real_response(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    help_feed(sim).add_device("0-3049668").send("OK", T0 - 60, 44.26225, -76.37656, content="fine")
    help_feed(sim, "FEED2").add_device("0-2").track(T0 - 600, 60, 2)
    real = json.loads((FIXTURES / "gregology_spot-sdk_sample_success_response.json").read_bytes())
    real_resp = real["response"]["feedMessageResponse"]
    ours = (await get(session, sim, "FEED1")).feed_response()

    assert list(ours) == list(real_resp)
    assert ours["feed"].keys() == real_resp["feed"].keys()
    assert ours["feed"]["type"] == "SHARED_PAGE"
    assert ours["feed"]["daysRange"] == 7
    assert ours["activityCount"] == 0
    # The real first message has content; field order as SPOT sends it.
    assert list(ours["messages"]["message"]) == list(real_resp["messages"]["message"][0])
    # Without content and battery those fields are absent, not null.
    bare = help_feed(sim, "FEED3").add_device("0-3")
    bare.send("TRACK", T0 - 60, 1.0, 2.0, battery=None)
    msg = (await get(session, sim, "FEED3")).messages()[0]
    assert "messageContent" not in msg
    assert "batteryState" not in msg


async def test_xml_shape(sim: Simulator, session: aiohttp.ClientSession) -> None:
    dev = help_feed(sim).add_device("0-8356068", "Spot & <Co>", model="SPOT2")
    dev.send("HELP", T0 - 120, 45.43249, -111.63832, content="Help <now> & here")
    dev.send("HELP-CANCEL", T0 - 60, battery=None)

    reply = await get(session, sim, "FEED1", "message.xml")
    assert reply.status == 200
    assert reply.content_type == "application/xml"
    root = SafeET.fromstring(reply.body)
    assert root.tag == "response"
    fmr = root.find("feedMessageResponse")
    assert fmr is not None
    assert [c.tag for c in fmr] == ["count", "feed", "totalCount", "activityCount", "messages"]
    feed = fmr.find("feed")
    assert feed is not None
    assert [c.tag for c in feed] == [
        "id", "name", "description", "status", "usage", "daysRange",
        "detailedMessageShown", "type",
    ]  # fmt: skip
    assert [c.text for c in feed] == [
        "FEED1", "Alps", "Alps", "ACTIVE", "0", "7", "true", "SHARED_PAGE",
    ]  # fmt: skip
    assert fmr.findtext("count") == "2"
    assert fmr.findtext("activityCount") == "0"
    cancel, help_ = fmr.findall("messages/message")
    assert cancel.attrib == {"clientUnixTime": "0"}
    assert [c.tag for c in help_] == [
        "id", "messengerId", "messengerName", "unixTime", "messageType", "latitude",
        "longitude", "modelId", "showCustomMsg", "dateTime", "batteryState", "hidden",
        "messageContent", "altitude",
    ]  # fmt: skip
    assert help_.findtext("messengerName") == "Spot & <Co>"
    assert help_.findtext("messageContent") == "Help <now> & here"
    assert help_.findtext("latitude") == "45.43249"
    assert help_.findtext("modelId") == "SPOT2"
    assert help_.findtext("dateTime") == "2023-11-14T22:11:20+0000"
    assert cancel.findtext("messageType") == "HELP-CANCEL"
    assert cancel.findtext("latitude") == cancel.findtext("longitude") == "-99999.0"
    assert float(cancel.findtext("latitude") or 0) == NO_POSITION
    assert cancel.find("batteryState") is None
    assert cancel.find("messageContent") is None

    # The same element names as a recorded real feed.
    real = SafeET.fromstring(
        (FIXTURES / "wiseleyb_spot_tracker_spot-trace-sample.xml").read_bytes()
    )
    real_msg = real.find("feedMessageResponse/messages/message")
    assert real_msg is not None
    assert {c.tag for c in real_msg} <= {c.tag for c in help_}


async def test_serializers_directly() -> None:
    msg = Message(
        id=FIRST_ID + 1, messenger_id="0-1", messenger_name="A", unix_time=int(T0), type="OK",
        latitude=1.5, longitude=2.5, altitude=0, model_id="SPOT3", battery="GOOD",
        date_time="2023-11-14T22:13:20+0000",
    )  # fmt: skip
    one = json.loads(to_json([msg], feed_id="F", feed_name="Feed", total=7))
    resp = one["response"]["feedMessageResponse"]
    assert resp["count"] == 1
    assert resp["totalCount"] == 7
    assert resp["messages"]["message"]["id"] == msg.id
    two = json.loads(to_json([msg, msg], feed_id="F"))
    assert len(two["response"]["feedMessageResponse"]["messages"]["message"]) == 2
    root = SafeET.fromstring(to_xml([msg], feed_id="F"))
    assert root.findtext("feedMessageResponse/feed/name") == "F"
    assert root.findtext("feedMessageResponse/messages/message/id") == str(msg.id)
    assert json.loads(error_to_json("E-0195", "No Messages to display", "x")) == {
        "response": {
            "errors": {
                "error": {"code": "E-0195", "text": "No Messages to display", "description": "x"}
            }
        }
    }
    err = SafeET.fromstring(error_to_xml(None, "Feed Password required", "y"))
    assert err.find("errors/error/code") is None
    assert err.findtext("errors/error/text") == "Feed Password required"


# --- errors -------------------------------------------------------------------------------


async def test_empty_feed_is_e0195_like_the_real_one(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    help_feed(sim, "foobar")
    reply = await get(session, sim, "foobar")
    real = json.loads((FIXTURES / "mattdsteele_spot-tracker-tracker_error.json").read_bytes())
    assert reply.status == 200
    assert reply.json() == real

    xml = await get(session, sim, "foobar", "message.xml")
    root = SafeET.fromstring(xml.body)
    assert [e.tag for e in root.iter()] == [
        "response", "errors", "error", "code", "text", "description",
    ]  # fmt: skip
    assert root.findtext("errors/error/code") == "E-0195"
    assert root.findtext("errors/error/text") == "No Messages to display"


async def test_unknown_feed_is_e0160_like_the_real_one(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    reply = await get(session, sim, "InvalidApiKey")
    real = json.loads((FIXTURES / "gregology_spot-sdk_sample_error_response.json").read_bytes())
    assert reply.status == 200
    assert reply.json() == real
    xml = await get(session, sim, "InvalidApiKey", "latest.xml")
    assert SafeET.fromstring(xml.body).findtext("errors/error/code") == "E-0160"
    assert [r.outcome for r in sim.requests] == ["notfound", "notfound"]


async def test_password_is_required_on_every_call(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    feed = help_feed(sim, password="s3cret-pw")
    feed.add_device("0-1").track(T0 - 600, 60, 3)

    for path in ("message.json", "latest.json"):
        for params in ({}, {"feedPassword": "wrong"}):
            reply = await get(session, sim, "FEED1", path, **params)
            assert reply.status == 200
            assert reply.error() == {
                "text": "Feed Password required",
                "description": "Feed Password required for feed: FEED1",
            }
        ok = await get(session, sim, "FEED1", path, feedPassword="s3cret-pw")
        assert len(ok.messages()) >= 1
    xml = await get(session, sim, "FEED1", "message.xml")
    assert SafeET.fromstring(xml.body).findtext("errors/error/text") == "Feed Password required"

    assert [r.outcome for r in sim.requests] == [
        "password", "password", "data", "password", "password", "data", "password",
    ]  # fmt: skip
    assert [r.password_sent for r in sim.requests[:3]] == [False, True, True]
    assert all("feedPassword" not in r.query for r in sim.requests)
    assert "s3cret-pw" not in repr(sim.requests)
    assert "wrong" not in repr(sim.requests)


# --- faults -------------------------------------------------------------------------------


def _parses(body: bytes, fmt: str) -> bool:
    try:
        if fmt == "json":
            json.loads(body)
        else:
            SafeET.fromstring(body)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError and XML ParseError's base
        return False
    except SafeET.ParseError:
        return False
    return True


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("500", 500, "text/plain"),
        ("503", 503, "text/plain"),
        ("403", 403, "text/plain"),
        ("truncated", 200, None),
        ("html", 200, "text/html"),
        ("garbage", 200, None),
        ("empty", 200, None),
        ("notfound", 200, None),
        ("password", 200, None),
    ],
)
async def test_fault_kind(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kind: str,
    status: int,
    content_type: str | None,
    fmt: str,
) -> None:
    feed = help_feed(sim)
    feed.add_device("0-1").track(T0 - 600, 60, 5)
    normal = await get(session, sim, "FEED1", f"message.{fmt}")
    feed.fail(kind)

    reply = await get(session, sim, "FEED1", f"message.{fmt}")
    assert reply.status == status
    assert reply.content_type == (content_type or f"application/{fmt}")
    match kind:
        case "truncated":
            assert normal.body.startswith(reply.body)
            assert len(reply.body) == len(normal.body) // 2
            assert not _parses(reply.body, fmt)
        case "html":
            assert reply.body.lower().startswith(b"<!doctype html")
        case "garbage":
            assert not _parses(reply.body, fmt)
        case "empty" | "notfound" | "password":
            expected = {"empty": "E-0195", "notfound": "E-0160", "password": None}[kind]
            if fmt == "json":
                assert reply.error().get("code") == expected
            else:
                code = SafeET.fromstring(reply.body).findtext("errors/error/code")
                assert code == expected
    assert sim.requests[-1].outcome == kind
    assert sim.requests[-1].status == status
    # One request consumed the fault; service is back to normal.
    assert (await get(session, sim, "FEED1", f"message.{fmt}")).body == normal.body


async def test_hang_holds_one_request_without_blocking_others(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    help_feed(sim).add_device("0-1").track(T0 - 600, 60, 5)
    help_feed(sim, "FEED2").add_device("0-2").track(T0 - 600, 60, 5)
    sim.feeds["FEED1"].fail("hang")

    async def hung() -> None:
        async with session.get(
            f"{sim.base_url}/FEED1/message.json", timeout=aiohttp.ClientTimeout(total=0.5)
        ):
            pass

    task = asyncio.create_task(hung())
    await arrival(sim)
    started = time.monotonic()
    other = await get(session, sim, "FEED2")
    assert other.status == 200
    assert time.monotonic() - started < 0.4
    assert not task.done()
    with pytest.raises(TimeoutError):
        await task
    assert [(r.feed_id, r.outcome, r.status) for r in sim.requests] == [
        ("FEED1", "hang", 0),
        ("FEED2", "data", 200),
    ]
    assert (await get(session, sim, "FEED1")).status == 200


async def test_hang_ends_at_its_limit_with_the_connection_dropped(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    help_feed(sim).add_device("0-1").track(T0 - 600, 60, 5)
    sim.hang_limit = 0.2
    # Two: aiohttp retries an idempotent request once when the server drops it.
    sim.fail_all("hang", times=2)
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(session, sim, "FEED1")
    assert 0.4 <= time.monotonic() - started < 1.5
    assert [r.outcome for r in sim.requests] == ["hang", "hang"]


async def test_stop_ends_a_hanging_request_promptly(clock: FakeClock) -> None:
    sim = Simulator(clock)
    help_feed(sim).add_device("0-1").track(T0 - 600, 60, 5)
    sim.fail_all("hang")
    await sim.start()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(get(session, sim, "FEED1"))
        await arrival(sim)
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 1.5
        with pytest.raises(aiohttp.ClientError):
            await task


async def test_faults_are_consumed_in_order_feed_first(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    feed = help_feed(sim)
    feed.add_device("0-1").track(T0 - 600, 60, 5)
    other = help_feed(sim, "FEED2")
    other.add_device("0-2").track(T0 - 600, 60, 1)
    sim.fail_all("html")
    feed.fail("500", times=2)
    feed.fail("empty")

    statuses = [(await get(session, sim, "FEED1")).status for _ in range(5)]
    assert statuses == [500, 500, 200, 200, 200]
    assert [r.outcome for r in sim.requests] == ["500", "500", "empty", "html", "data"]

    sim.fail_all("503", times=2)
    assert (await get(session, sim, "FEED2")).status == 503
    assert (await get(session, sim, "nosuchfeed")).status == 503
    assert (await get(session, sim, "FEED2")).status == 200
    assert [r.outcome for r in sim.requests[5:]] == ["503", "503", "data"]


def test_unknown_fault_kind_is_refused_at_once(clock: FakeClock) -> None:
    sim = Simulator(clock)
    feed = sim.add_feed("F")
    with pytest.raises(ValueError, match="unknown fault kind"):
        feed.fail("404")
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.fail_all("timeout", times=3)


async def test_block_answers_403_until_unblocked(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    feed = help_feed(sim)
    feed.add_device("0-1").track(T0 - 600, 60, 5)
    help_feed(sim, "FEED2").add_device("0-2").track(T0 - 600, 60, 5)
    feed.fail("500")
    feed.block()

    for path in ("message.json", "latest.xml", "message.xml"):
        assert (await get(session, sim, "FEED1", path, start="51")).status == 403
    assert (await get(session, sim, "FEED2")).status == 200
    feed.unblock()
    # The queued fault waited for the block to end.
    assert (await get(session, sim, "FEED1")).status == 500
    assert (await get(session, sim, "FEED1")).status == 200
    assert [r.outcome for r in sim.requests] == [
        "blocked", "blocked", "blocked", "data", "500", "data",
    ]  # fmt: skip


# --- the request log ----------------------------------------------------------------------


async def test_request_log(
    sim: Simulator, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    help_feed(sim, password="pw").add_device("0-1").track(T0 - 600 * 60, 60, 60)
    await get(session, sim, "FEED1", feedPassword="pw")
    clock.advance(150)
    await get(session, sim, "FEED1", "message.xml", start="51", feedPassword="pw")
    await get(session, sim, "FEED1", "latest.json", feedPassword="pw")
    await get(session, sim, "FEED1", start="1000", feedPassword="pw")
    await get(session, sim, "nope", "latest.xml")

    log = sim.requests
    assert [(r.feed_id, r.endpoint, r.fmt, r.start, r.status, r.outcome) for r in log] == [
        ("FEED1", "message", "json", None, 200, "data"),
        ("FEED1", "message", "xml", 51, 200, "data"),
        ("FEED1", "latest", "json", None, 200, "data"),
        ("FEED1", "message", "json", 1000, 200, "empty"),
        ("nope", "latest", "xml", None, 200, "notfound"),
    ]
    assert [r.at for r in log] == [T0, T0 + 150, T0 + 150, T0 + 150, T0 + 150]
    assert all(a.mono <= b.mono for a, b in itertools.pairwise(log))
    assert log[1].query == {"start": "51"}
    assert [r.password_sent for r in log] == [True, True, True, True, False]
    assert all("feedPassword" not in r.query and "pw" not in r.query.values() for r in log)


# --- ids ----------------------------------------------------------------------------------


def test_ids_increase_in_script_order_by_default(clock: FakeClock) -> None:
    sim = Simulator(clock)
    dev = sim.add_feed("F").add_device("0-1")
    # Scripted out of time order: ids follow the script, not the times.
    sent = [dev.send("OK", T0 - t) for t in (10, 500, 20, 300)]
    sent += sim.add_feed("G").add_device("0-2").track(T0 - 600, 60, 5)
    ids = [m.id for m in sent]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert FIRST_ID < ids[0] < FIRST_ID + 10_000


def test_shuffled_ids_are_unique_and_not_time_ordered(clock: FakeClock) -> None:
    def script(seed: int) -> list[Message]:
        sim = Simulator(clock, shuffled_ids=True, seed=seed)
        return sim.add_feed("F").add_device("0-1").track(T0 - 200 * 60, 60, 200)

    sent = script(7)
    ids = [m.id for m in sent]
    assert len(set(ids)) == 200
    assert ids != sorted(ids)
    assert ids != sorted(ids, reverse=True)
    assert all(i >= FIRST_ID for i in ids)
    assert [m.id for m in script(7)] == ids  # seeded: the same every run
    assert [m.id for m in script(8)] != ids


async def test_shuffled_feed_still_served_newest_first(
    clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(clock, shuffled_ids=True, seed=3) as sim:
        sim.add_feed("F").add_device("0-1").track(T0 - 30 * 60, 60, 30)
        times = [m["unixTime"] for m in (await get(session, sim, "F")).messages()]
        assert times == sorted(times, reverse=True)


# --- scripting helpers --------------------------------------------------------------------


def test_track_and_repeat(clock: FakeClock) -> None:
    sim = Simulator(clock)
    dev = sim.add_feed("F").add_device("0-1", "Anna", model="SPOTTRACE")
    track = dev.track(T0, 150, 3, lat=46.5, lon=7.9, step=0.001)
    assert [(m.unix_time, m.latitude, m.longitude) for m in track] == [
        (int(T0), 46.5, 7.9),
        (int(T0) + 150, 46.501, 7.901),
        (int(T0) + 300, 46.502, 7.902),
    ]
    assert {m.type for m in track} == {"TRACK"}
    helps = dev.repeat("HELP", T0 + 400, 300, 4, 46.6, 7.95, content="help!")
    assert [m.unix_time for m in helps] == [int(T0) + 400 + 300 * i for i in range(4)]
    assert all(m.type == "HELP" and m.content == "help!" and m.has_position for m in helps)
    assert helps[0].model_id == "SPOTTRACE"
    assert helps[0].messenger_name == "Anna"
    assert sim.feeds["F"].messages == track + helps
    off = dev.send("POWER-OFF", T0 + 5000)
    assert not off.has_position
    assert off.date_time == format_spot_datetime(int(T0 + 5000))


async def test_many_feeds_are_served_quickly(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    for i in range(75):
        help_feed(sim, f"F{i}").add_device(f"0-{i}").track(T0 - 7 * DAY, 900, 7 * 96)
    started = time.monotonic()
    for i in range(75):
        assert len((await get(session, sim, f"F{i}", "message.xml")).body) > 10_000
    assert time.monotonic() - started < 3.0


# --- round trip through the parser --------------------------------------------------------


def _scripted_variety(sim: Simulator) -> list[Message]:
    feed = help_feed(sim)
    anna = feed.add_device("0-1234567", "Anna & <Co>")
    ben = feed.add_device("0-7654321", model="SPOTTRACE")
    return [
        *anna.track(T0 - 3000, 600, 3, lat=-33.123456, lon=151.2),
        anna.send("HELP", T0 - 900, 46.5, 7.9, content="Help <me> & now", battery="LOW"),
        anna.send("HELP-CANCEL", T0 - 600, content="cancelled"),
        ben.send("POWER-OFF", T0 - 300, battery=None, altitude=None),
        ben.send("TRACK", T0 - 120, 10.0, -20.0, altitude=-12),
    ]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_round_trip_through_parse_feed(
    sim: Simulator, session: aiohttp.ClientSession, fmt: Literal["json", "xml"]
) -> None:
    sent = _scripted_variety(sim)
    reply = await get(session, sim, "FEED1", f"message.{fmt}")
    page = parse_feed(reply.body, fmt)
    assert page.skipped == ()
    assert (page.feed_id, page.feed_name, page.total_count) == ("FEED1", "Alps", len(sent))
    newest_first = sorted(sent, key=lambda m: m.unix_time, reverse=True)
    assert [dataclasses.replace(m, extra=()) for m in page.messages] == newest_first

    # The lone-message object and the latest endpoint parse the same way.
    one = parse_feed(to_json(sent[:1], feed_id="F"), "json")
    assert one.messages[0].id == sent[0].id
    latest = parse_feed((await get(session, sim, "FEED1", f"latest.{fmt}")).body)
    assert {m.messenger_id: m.id for m in latest.messages} == {
        "0-1234567": sent[4].id,
        "0-7654321": sent[6].id,
    }


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("empty", None),
        ("notfound", FeedConfigFault),
        ("password", FeedConfigFault),
        ("truncated", FeedUnavailable),
        ("html", FeedUnavailable),
        ("garbage", FeedUnavailable),
    ],
)
async def test_fault_bodies_parse_as_intended(
    sim: Simulator,
    session: aiohttp.ClientSession,
    fmt: Literal["json", "xml"],
    kind: str,
    error: type[Exception] | None,
) -> None:
    _scripted_variety(sim)
    sim.fail_all(kind)
    body = (await get(session, sim, "FEED1", f"message.{fmt}")).body
    if error is None:
        assert parse_feed(body, fmt).messages == ()
    else:
        with pytest.raises(error):
            parse_feed(body, fmt)
