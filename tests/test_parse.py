"""Tests for alerter.spot.parse: every recorded payload, then the quirks one by one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerter.errors import FeedConfigFault, FeedError, FeedUnavailable
from alerter.models import UNUSABLE_TIME, FeedPage, Message
from alerter.spot import parse as parse_module
from alerter.spot.parse import (
    EARLIEST_TIME,
    LATEST_AHEAD,
    MILLISECONDS_TIME,
    parse_feed,
    parse_spot_datetime,
    sniff_format,
    with_usable_time,
)

FIXTURES = Path(__file__).parent / "fixtures"
LOGGER = "alerter.spot.parse"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- every recorded payload ---------------------------------------------------


@dataclass(frozen=True)
class Page:
    """What a fixture holding messages must parse to."""

    types: list[str]  # in page order; its length is the message count
    feed_id: str | None
    feed_name: str | None
    total_count: int | None
    ids: list[int] | None = None  # in page order, when short enough to list
    no_position: frozenset[int] = frozenset()  # ids of messages without a GPS fix
    fields: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # index -> attrs


MESSAGE_FIXTURES: dict[str, Page] = {
    "codeshaw_spot-tracker_multi-response.json": Page(
        types=["OK", "OK"],
        feed_id="0QMDKF0I6jklMx12jKlxxsLpTLdAv8PgH",
        feed_name="Bradshaw's Progress",
        total_count=2,
        ids=[770632725, 770556710],
        fields={
            0: {
                "messenger_id": "0-3019993",
                "messenger_name": "Bradshaw",
                "unix_time": 1498079394,
                "latitude": 51.57789,
                "longitude": -0.14709,
                "altitude": 0,
                "battery": "GOOD",
                "model_id": "SPOT3",
                "content": "Everything is fine...",
                "date_time": "2017-06-21T21:09:54+0000",
            },
            1: {"unix_time": 1498072869},
        },
    ),
    # The lone-message quirk: messages.message is an object, not a list.
    "codeshaw_spot-tracker_single-response.json": Page(
        types=["OK"],
        feed_id="0QMDKF0I6jklMx12jKlxxsLpTLdAv8PgH",
        feed_name="Bradshaw's Progress",
        total_count=1,
        ids=[792052314],
        fields={
            0: {
                "messenger_id": "0-3019993",
                "unix_time": 1500729311,
                "latitude": 51.60062,
                "longitude": -0.14496,
                "battery": "GOOD",
                "extra": (
                    ("clientUnixTime", "0"),
                    ("hidden", "0"),
                    ("messageDetail", ""),
                    ("showCustomMsg", "N"),
                ),
            }
        },
    ),
    # Header says count 6, totalCount 2; two messages are present.
    "gregology_spot-sdk_sample_success_response.json": Page(
        types=["OK", "UNLIMITED-TRACK"],
        feed_id="ValidApiKey",
        feed_name="SVCatsaway",
        total_count=2,
        ids=[823675096, 823674967],
        fields={
            0: {
                "messenger_id": "0-3049668",
                "messenger_name": "svcatsaway",
                "unix_time": 1504559957,
                "altitude": 0,
                "content": "This is the default SPOT Check In message. Please update.",
            },
            1: {"unix_time": 1504559945, "altitude": 80, "content": None, "battery": "GOOD"},
        },
    ),
    # Ids out of time order (1757061668 is later than 1757061691); order kept as given.
    "mattdsteele_spot-tracker-tracker_example.json": Page(
        types=["UNLIMITED-TRACK"] * 4,
        feed_id="redacted",
        feed_name="spot-feed-private",
        total_count=4,
        ids=[1757063618, 1757061668, 1757061691, 1757058425],
        fields={
            0: {"messenger_id": "0-3537610", "messenger_name": "Matt S", "altitude": 398},
            1: {"unix_time": 1650812030, "altitude": 365},
            2: {"unix_time": 1650811730, "altitude": 0},
            3: {"unix_time": 1650811434, "latitude": 41.27652, "longitude": -95.9881},
        },
    ),
    # Three HELPs about five minutes apart; count says 44, nine are present.
    "new-mikha_flytrace_Anna.xml": Page(
        types=["TRACK"] * 4 + ["HELP"] * 3 + ["TRACK", "OK"],
        feed_id="some_other_id",
        feed_name="Some other name",
        total_count=44,
        ids=[
            312613401,
            312610079,
            312609104,
            312596556,
            312600187,
            312561955,
            312560927,
            312550564,
            312338572,
        ],
        fields={
            4: {
                "messenger_id": "0-7514517",
                "messenger_name": "anna",
                "unix_time": 1408019921,
                "latitude": -15.75455,
                "longitude": -49.33228,
                "altitude": None,
                "model_id": "SPOT",
                "battery": "GOOD",
                "content": "Blah-blah-blah. Blah-blah-blah-blah-blah-blah-blah-blah-blah!!!",
            },
            6: {"unix_time": 1408019356},
        },
    ),
    # No <feed> and no counts at all; the same id twice (the store dedupes, not the parser).
    "new-mikha_flytrace_BasicRequest.xml": Page(
        types=["OK", "TRACK"],
        feed_id=None,
        feed_name=None,
        total_count=None,
        ids=[111111111, 111111111],
        fields={
            0: {
                "messenger_id": "0-11111",
                "unix_time": 1523341871,
                "latitude": 1.0,
                "longitude": 2.0,
                "altitude": 0,
                "model_id": "SPOT2",
                "content": "Michael has landed, needs retrieve",
            },
            1: {"unix_time": 1523341271, "latitude": 3.0, "longitude": 4.0, "content": None},
        },
    ),
    # count 50, totalCount 165, 42 present; messengerName equals messengerId.
    "new-mikha_flytrace_Maria.xml": Page(
        types=["TRACK"] * 2 + ["OK"] + ["TRACK"] * 35 + ["OK"] + ["TRACK"] * 3,
        feed_id="some_id",
        feed_name="some name",
        total_count=165,
        fields={
            0: {"id": 312716859, "messenger_id": "0-123456", "messenger_name": "0-123456"},
            2: {
                "id": 312711675,
                "unix_time": 1408047472,
                "model_id": "SPOT3",
                "content": "Maria pousado em segurança, coordenada foramto Hdd,dddd",
            },
            # 312707257 follows 312707218 yet is older: order as given.
            4: {"id": 312707218, "unix_time": 1408046665},
            5: {"id": 312707257, "unix_time": 1408046065},
            41: {"id": 312335665, "unix_time": 1407957121, "latitude": -15.43173},
        },
    ),
    # BOM + licence comment before <response>; totalCount 0 with two messages present.
    "new-mikha_flytrace_XMLFile1.xml": Page(
        types=["OK", "TRACK"],
        feed_id="0U6G2qZE7s5h3F6kRq6qp8uoTqARPfy03",
        feed_name="Mikha",
        total_count=0,
        ids=[182024067, 182023750],
        fields={
            0: {
                "messenger_id": "0-8220745",
                "unix_time": 1357815816,
                "model_id": None,
                "battery": None,
                "altitude": 0,
                "content": "Michael has landed, needs retrieve",
            },
        },
    ),
    "vicb_flyXC_spot.json": Page(
        types=["TRACK"] * 24,
        feed_id="023uaRmEescnGQq2d6b4TTu3B1z1qBgeT",
        feed_name="parapente",
        total_count=24,
        fields={
            0: {"id": 1300461236, "messenger_id": "0-8272242", "messenger_name": "pasc"},
            23: {"id": 1300358808, "unix_time": 1571217546, "altitude": 0, "model_id": "SPOT2"},
        },
    ),
    # Hand-edited by its author: count 24 but five messages, with an OK, a HELP, a LOW.
    "vicb_flyXC_spot2.txt": Page(
        types=["TRACK", "OK", "HELP", "TRACK", "TRACK"],
        feed_id="023uaRmEescnGQq2d6b4TTu3B1z1qBgeT",
        feed_name="parapente",
        total_count=24,
        ids=[1300461236, 1300454747, 1300449673, 1300443846, 1300438102],
        fields={
            1: {"content": "msg ok", "altitude": 0},
            2: {"messenger_id": "0-8139942", "unix_time": 1571230128, "content": "msg help"},
            3: {"battery": "LOW", "model_id": "SPOT2"},
        },
    ),
    "vicb_flyXC_spot3.txt": Page(
        types=["TRACK", "OK", "HELP", "TRACK", "TRACK"],
        feed_id="023uaRmEescnGQq2d6b4TTu3B1z1qBgeT",
        feed_name="parapente",
        total_count=24,
        ids=[1300461236, 1300454747, 1300449673, 1300443846, 1300438102],
        fields={
            0: {"altitude": 123, "model_id": "SPOT3"},
            1: {"altitude": 456},
            2: {"altitude": 789, "content": "msg help"},
            3: {"altitude": 123, "battery": "LOW"},
            4: {"altitude": 456},
        },
    ),
    # dateTime with a -0700 offset; HELP-CANCEL at -99999.0; no batteryState anywhere.
    "wiseleyb_spot_tracker_sample-spot-data.xml": Page(
        types=["HELP-CANCEL", "HELP", "CUSTOM", "OK", "TRACK"],
        feed_id="03XHH0sPyTiYUsYD2TVJ4q7CzEH89HBhG",
        feed_name="OneAtATime",
        total_count=10,
        ids=[4937065, 4937064, 4937060, 4937059, 4937057],
        no_position=frozenset({4937065}),
        fields={
            0: {"content": "The help message has been cancelled", "battery": None},
            1: {
                "messenger_id": "0-8356068",
                "messenger_name": "Spot2",
                "unix_time": 1364909283,
                "date_time": "2013-04-02T06:28:03-0700",
                "latitude": 45.43249,
                "longitude": -111.63832,
                "altitude": None,
                "battery": None,
                "model_id": "SPOT2",
            },
        },
    ),
    # SPOT Trace; messageContent with leading spaces; POWER-OFF at -99999.0.
    "wiseleyb_spot_tracker_spot-trace-sample.xml": Page(
        types=["UNLIMITED-TRACK"] * 2
        + ["STOP"] * 3
        + ["UNLIMITED-TRACK", "NEWMOVEMENT", "POWER-OFF"],
        feed_id="01DGNHRHJnXaSt8C7naZb3GbI6nWJ3uOi",
        feed_name="ben-hobie-tandem-island",
        total_count=8,
        ids=[
            338746196,
            338745045,
            338630997,
            338631018,
            338631019,
            338624025,
            338622696,
            338618627,
        ],
        no_position=frozenset({338618627}),
        fields={
            0: {"messenger_id": "0-2536646", "unix_time": 1415407923, "model_id": "SPOTTRACE"},
            6: {"content": "SPOT Trace has detected that the asset has moved."},
            7: {"content": "Your SPOT Trace has been powered off.", "battery": "GOOD"},
        },
    ),
    "synthetic_help_no_fix.xml": Page(
        types=["HELP", "SOS", "HELP"],
        feed_id="synthFeed01",
        feed_name="Synthetic Feed",
        total_count=None,  # "not-a-number"
        ids=[9000000000000000001, 9000000000000000002, 9000000000000000003],
        no_position=frozenset({9000000000000000001, 9000000000000000003}),
        fields={
            0: {
                "messenger_name": "0-9999001",  # blank name: the messengerId stands in
                "unix_time": 1700000000,
                "battery": "LOW",
                "altitude": -12,
                "content": None,
                "model_id": "SPOT4",
                "extra": (("clientUnixTime", "0"), ("futureField", "x")),
            },
            # 2023-11-14T22:03:20+0530 is 16:33:20 UTC.
            1: {"unix_time": 1699979600, "latitude": 46.5, "longitude": 7.9},
            2: {"unix_time": 1700000100, "content": "stuck on the ridge"},
        },
    ),
}

#: Error fixtures: None means "an empty page"; else (exception, code or None).
ERROR_FIXTURES: dict[str, tuple[type[Exception], str | None] | None] = {
    "mattdsteele_spot-tracker-tracker_error.json": None,
    "new-mikha_flytrace__empty.xml": None,
    "wiseleyb_spot_tracker_sample-spot-error.xml": None,
    "gregology_spot-sdk_sample_error_response.json": (FeedConfigFault, "E-0160"),
    "synthetic_errors_list.json": (FeedConfigFault, None),
    "synthetic_entity_bomb.xml": (FeedUnavailable, None),
}

PAYLOADS = sorted(
    p.name
    for p in FIXTURES.iterdir()
    if p.suffix in {".xml", ".json", ".txt"} and p.name != "SOURCES.txt"
)


def test_every_payload_has_expectations() -> None:
    assert len(PAYLOADS) >= 20
    assert set(PAYLOADS) == set(MESSAGE_FIXTURES) | set(ERROR_FIXTURES)
    assert not set(MESSAGE_FIXTURES) & set(ERROR_FIXTURES)


def test_every_payload_is_listed_in_sources() -> None:
    sources = (FIXTURES / "SOURCES.txt").read_text(encoding="utf-8")
    listed = {line.split("\t", 1)[0] for line in sources.splitlines() if "\t" in line}
    assert set(PAYLOADS) <= listed


@pytest.mark.parametrize("name", sorted(MESSAGE_FIXTURES))
def test_fixture_page(name: str) -> None:
    expected = MESSAGE_FIXTURES[name]
    page = parse_feed(load(name))

    assert len(page.messages) == len(expected.types)
    assert [m.type for m in page.messages] == expected.types
    assert page.skipped == ()
    assert (page.feed_id, page.feed_name) == (expected.feed_id, expected.feed_name)
    assert page.total_count == expected.total_count
    if expected.ids is not None:
        assert [m.id for m in page.messages] == expected.ids
    assert {m.id for m in page.messages if not m.has_position} == expected.no_position
    for m in page.messages:
        assert (m.latitude is None) == (m.longitude is None)
        assert m.content is None or m.content == m.content.strip() != ""
    for index, attrs in expected.fields.items():
        message = page.messages[index]
        assert {k: getattr(message, k) for k in attrs} == dict(attrs), f"message {index}"


@pytest.mark.parametrize("name", sorted(MESSAGE_FIXTURES))
def test_fixture_times_agree_with_date_time(name: str) -> None:
    page = parse_feed(load(name))
    dated = [(m, m.date_time) for m in page.messages if m.date_time is not None]
    assert dated
    for m, date_time in dated:
        assert parse_spot_datetime(date_time) == m.unix_time, m.id


@pytest.mark.parametrize("name", PAYLOADS)
def test_fixture_format_is_sniffed(name: str) -> None:
    body = load(name)
    expected = "xml" if name.endswith(".xml") else "json"
    assert sniff_format(body) == expected
    if name in MESSAGE_FIXTURES:
        assert parse_feed(body, expected) == parse_feed(body)


@pytest.mark.parametrize("name", sorted(ERROR_FIXTURES))
def test_fixture_error(name: str) -> None:
    expected = ERROR_FIXTURES[name]
    if expected is None:
        assert parse_feed(load(name)) == FeedPage()
        return
    exc_type, code = expected
    with pytest.raises(exc_type) as caught:
        parse_feed(load(name))
    assert type(caught.value) is exc_type
    if exc_type is FeedConfigFault:
        assert isinstance(caught.value, FeedConfigFault)
        assert caught.value.code == code


def test_fixture_not_found_text() -> None:
    with pytest.raises(FeedConfigFault) as caught:
        parse_feed(load("gregology_spot-sdk_sample_error_response.json"))
    assert caught.value.text == "Feed Not Found"
    assert "InvalidApiKey" not in str(caught.value)  # the description is not echoed


def test_fixture_errors_list_names_the_config_fault() -> None:
    with pytest.raises(FeedConfigFault) as caught:
        parse_feed(load("synthetic_errors_list.json"))
    assert caught.value.text == "Feed Currently Not Active"


# --- building bodies ----------------------------------------------------------

BASE = {
    "id": "1001",
    "messengerId": "0-42",
    "messengerName": "Kim",
    "unixTime": "1700000000",
    "messageType": "TRACK",
    "latitude": "46.5",
    "longitude": "7.9",
}


def msg(**changes: object) -> dict[str, object]:
    """BASE with changes; a value of None removes the field."""
    fields = {**BASE, **changes}
    return {k: v for k, v in fields.items() if v is not None}


def xml_page(*messages: Mapping[str, object], header: str = "") -> bytes:
    parts = []
    for m in messages:
        attrs = " ".join(f'{k[1:]}="{v}"' for k, v in m.items() if k.startswith("@"))
        children = "".join(f"<{k}>{v}</{k}>" for k, v in m.items() if not k.startswith("@"))
        parts.append(f"<message {attrs}>{children}</message>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><response><feedMessageResponse>'
        f"{header}<messages>{''.join(parts)}</messages></feedMessageResponse></response>"
    ).encode()


def json_page(*messages: Mapping[str, object], lone: bool = False, **header: object) -> bytes:
    listed: object = dict(messages[0]) if lone else [dict(m) for m in messages]
    body = {"response": {"feedMessageResponse": {**header, "messages": {"message": listed}}}}
    return json.dumps(body).encode()


def json_errors(error: object) -> bytes:
    return json.dumps({"response": {"errors": {"error": error}}}).encode()


def xml_errors(*errors: tuple[str | None, str]) -> bytes:
    parts = "".join(
        "<error>"
        + (f"<code>{code}</code>" if code is not None else "")
        + f"<text>{text}</text><description>for feed: secretFeed</description></error>"
        for code, text in errors
    )
    return f"<response><errors>{parts}</errors></response>".encode()


def only(page: FeedPage) -> Message:
    assert len(page.messages) == 1, page
    return page.messages[0]


# --- single message, formats agree -------------------------------------------


def test_lone_json_object_is_kept() -> None:
    page = parse_feed(json_page(msg(messageType="HELP"), lone=True, count=1))
    assert only(page).type == "HELP"
    assert only(page).id == 1001


def test_lone_latest_object_is_kept() -> None:
    body = json_page(msg(id=7, messengerId="0-7"), lone=True, feed={"id": "F1", "name": "Latest"})
    page = parse_feed(body)
    assert (only(page).messenger_id, page.feed_id, page.feed_name) == ("0-7", "F1", "Latest")


def test_xml_and_json_give_the_same_message() -> None:
    fields = msg(
        messageType="help",
        altitude="-3",
        batteryState="good",
        messageContent="  out of water  ",
        dateTime="2023-11-14T22:13:20+0000",
        modelId="SPOT3",
        showCustomMsg="Y",
        hidden="0",
        messageDetail="",
    )
    with_attr = {"@clientUnixTime": "0", **fields}
    from_xml = only(parse_feed(xml_page(with_attr)))
    from_json = only(parse_feed(json_page(with_attr)))
    assert from_xml == from_json
    assert from_xml == Message(
        id=1001,
        messenger_id="0-42",
        messenger_name="Kim",
        unix_time=1700000000,
        type="HELP",
        latitude=46.5,
        longitude=7.9,
        altitude=-3,
        model_id="SPOT3",
        battery="GOOD",
        content="out of water",
        date_time="2023-11-14T22:13:20+0000",
        extra=(
            ("clientUnixTime", "0"),
            ("hidden", "0"),
            ("messageDetail", ""),
            ("showCustomMsg", "Y"),
        ),
    )


def test_json_numbers_are_accepted() -> None:
    body = json_page(
        msg(id=1757063618, unixTime=1650812328, latitude=31.5, longitude=-85, altitude=7)
    )
    m = only(parse_feed(body))
    assert (m.id, m.unix_time, m.latitude, m.longitude, m.altitude) == (
        1757063618,
        1650812328,
        31.5,
        -85.0,
        7,
    )


def test_json_extra_scalars_become_text() -> None:
    body = json_page(msg(hidden=0, detailedFlag=True, weird={"a": 1}, nothing=None))
    extra = dict(only(parse_feed(body)).extra)
    assert extra == {"hidden": "0", "detailedFlag": "true", "weird": '{"a":1}'}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json_page(), id="json-empty-list"),
        pytest.param(b'{"response":{"feedMessageResponse":{"count":0}}}', id="json-no-messages"),
        pytest.param(
            b'{"response":{"feedMessageResponse":{"messages":null}}}', id="json-null-messages"
        ),
        pytest.param(xml_page(), id="xml-empty-messages"),
        pytest.param(
            b"<response><feedMessageResponse><count>3</count></feedMessageResponse></response>",
            id="xml-no-messages",
        ),
    ],
)
def test_page_without_messages_is_empty(body: bytes) -> None:
    page = parse_feed(body)
    assert page.messages == ()
    assert page.skipped == ()


def test_header_counts_do_not_limit_messages() -> None:
    body = json_page(msg(id=1), msg(id=2), msg(id=3), count=1, totalCount="lots")
    page = parse_feed(body)
    assert [m.id for m in page.messages] == [1, 2, 3]
    assert page.total_count is None


# --- error bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        pytest.param(
            json_errors({"code": "E-0160", "text": "Feed Not Found"}),
            "E-0160",
            "Feed Not Found",
            id="json-not-found",
        ),
        pytest.param(
            json_errors({"text": "Feed Currently Not Active"}),
            None,
            "Feed Currently Not Active",
            id="json-not-active",
        ),
        pytest.param(
            json_errors([{"text": "Feed Password required"}]),
            None,
            "Feed Password required",
            id="json-password-in-list",
        ),
        pytest.param(
            json_errors(
                [
                    {"code": "E-0195", "text": "No Messages to display"},
                    {"code": "E-0160", "text": "Feed Not Found"},
                ]
            ),
            "E-0160",
            "Feed Not Found",
            id="json-list-config-fault-wins",
        ),
        pytest.param(
            xml_errors((None, "feed currently NOT ACTIVE")),
            None,
            "feed currently NOT ACTIVE",
            id="xml-not-active-any-case",
        ),
        pytest.param(
            xml_errors(("E-0195", "No Messages to display"), (None, "Feed Password required")),
            None,
            "Feed Password required",
            id="xml-two-errors",
        ),
        pytest.param(
            xml_errors(("E-0160", "Feed Not Found")), "E-0160", "Feed Not Found", id="xml-not-found"
        ),
    ],
)
def test_config_fault(body: bytes, code: str | None, text: str) -> None:
    with pytest.raises(FeedConfigFault) as caught:
        parse_feed(body)
    assert (caught.value.code, caught.value.text) == (code, text)
    assert "secretFeed" not in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json_errors({"code": "E-0195", "text": "No Messages to display"}), id="json"),
        pytest.param(
            json_errors([{"code": "E-0195", "text": "No Messages to display"}] * 2),
            id="json-list",
        ),
        pytest.param(xml_errors(("E-0195", "No Messages to display")), id="xml"),
        pytest.param(
            xml_errors(("E-0195", "x"), ("E-0195", "No Messages to display")), id="xml-two"
        ),
    ],
)
def test_no_messages_is_an_empty_page(body: bytes) -> None:
    assert parse_feed(body) == FeedPage()


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        pytest.param(
            json_errors({"code": "E-0999", "text": "Internal Error"}),
            ["E-0999", "Internal Error"],
            id="json-unknown-code",
        ),
        pytest.param(
            json_errors(
                [
                    {"code": "E-0195", "text": "No Messages to display"},
                    {"code": "E-0500", "text": "Try later"},
                ]
            ),
            ["E-0500", "Try later"],
            id="json-unknown-beside-empty",
        ),
        pytest.param(
            xml_errors(("E-0123", "Service Busy")), ["E-0123", "Service Busy"], id="xml-unknown"
        ),
        pytest.param(xml_errors((None, "Odd trouble")), ["Odd trouble"], id="xml-no-code"),
        pytest.param(json_errors([]), ["without any error"], id="json-empty-error-list"),
    ],
)
def test_unknown_error_is_unavailable(body: bytes, mentions: list[str]) -> None:
    with pytest.raises(FeedUnavailable) as caught:
        parse_feed(body)
    for word in mentions:
        assert word in str(caught.value)


# --- not a SPOT response ------------------------------------------------------

MARIA = load("new-mikha_flytrace_Maria.xml")
VICB = load("vicb_flyXC_spot.json")
HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head><body>"
    + b"We will be back soon. " * 40
    + b"<p>TAIL-MARKER</p></body></html>"
)

# Pushes the marker past any excerpt, so finding it in an error means the body was dumped.
PAD = b" " + b"pad " * 20
TAIL = PAD + b"TAIL-MARKER"

NOT_SPOT = [
    pytest.param(HTML, "HTML", id="html-maintenance"),
    pytest.param(b"\n  <html><body>503 " + TAIL + b"</body></html>", "HTML", id="html-no-doctype"),
    pytest.param(
        b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd"><html>TAIL-MARKER</html>',
        "HTML",
        id="xhtml",
    ),
    pytest.param(MARIA[: len(MARIA) // 2], "XML", id="truncated-xml"),
    pytest.param(VICB[: len(VICB) // 2], "JSON", id="truncated-json"),
    pytest.param(bytes(range(256)) * 3 + b"TAIL-MARKER", "", id="garbage"),
    pytest.param(b"\x00\x01\x02\xff\xfe", "", id="garbage-short"),
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b" \r\n\t ", "empty", id="whitespace"),
    pytest.param(b"\xef\xbb\xbf", "empty", id="bom-only"),
    pytest.param(
        (
            '<?xml version="1.0" encoding="ISO-8859-1"?><response>é' + TAIL.decode() + "</response>"
        ).encode("latin-1"),
        "UTF-8",
        id="latin-1",
    ),
    pytest.param(
        b'{"feedMessageResponse": {}, "x": "' + TAIL + b'"}', "response", id="json-no-response"
    ),
    pytest.param(b'[1, 2, "' + TAIL + b'"]', "response", id="json-list"),
    pytest.param(b'{"response": "' + TAIL + b'"}', "response", id="json-response-string"),
    pytest.param(b'{"response": {"other": "' + TAIL + b'"}}', "", id="json-empty-response"),
    pytest.param(b"<rss><channel>" + TAIL + b"</channel></rss>", "rss", id="xml-wrong-root"),
    pytest.param(b"<response><other>" + TAIL + b"</other></response>", "", id="xml-empty-response"),
    pytest.param(load("synthetic_entity_bomb.xml"), "DTD", id="entity-bomb"),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<response>&x;</response>",
        "DTD",
        id="external-entity",
    ),
    pytest.param(
        b"<!DOCTYPE response [<!ELEMENT response ANY>]><response><feedMessageResponse>"
        b"</feedMessageResponse></response>",
        "DTD",
        id="plain-dtd",
    ),
    pytest.param(
        b'<!DOCTYPE response SYSTEM "http://example.invalid/spot.dtd"><response/>',
        "DTD",
        id="external-dtd",
    ),
    pytest.param(b"[" * 200_000, "JSON", id="json-too-deep"),
    pytest.param(b'{"response": ' + b"9" * 5000 + b"}", "JSON", id="json-huge-int"),
    pytest.param(b"Service Unavailable" + TAIL, "neither", id="plain-text"),
]


@pytest.mark.parametrize(("body", "mentions"), NOT_SPOT)
def test_not_a_spot_response(body: bytes, mentions: str) -> None:
    with pytest.raises(FeedUnavailable) as caught:
        parse_feed(body)
    text = str(caught.value)
    assert type(caught.value) is FeedUnavailable
    assert mentions in text
    assert "TAIL-MARKER" not in text  # never the whole body
    assert len(text) <= 160
    assert text.isprintable()


def test_excerpt_is_short_and_sanitized() -> None:
    body = b"junk\x00\x07\x1b[31m  \n\n" + b"x" * 300
    with pytest.raises(FeedUnavailable) as caught:
        parse_feed(body)
    excerpt = str(caught.value).split(": ", 1)[1].strip('"')
    assert excerpt.startswith("junk")
    assert len(excerpt) <= 60
    assert excerpt.isprintable()
    assert "\x1b" not in excerpt


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        pytest.param(load("codeshaw_spot-tracker_single-response.json"), "xml", id="json-as-xml"),
        pytest.param(load("new-mikha_flytrace_Anna.xml"), "json", id="xml-as-json"),
    ],
)
def test_wrong_forced_format_is_unavailable(body: bytes, fmt: str) -> None:
    with pytest.raises(FeedUnavailable):
        parse_feed(body, fmt)  # type: ignore[arg-type]


# --- malformed messages -------------------------------------------------------


@pytest.mark.parametrize("page_of", [xml_page, json_page], ids=["xml", "json"])
def test_malformed_middle_message_is_skipped(
    page_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = page_of(msg(id="1"), msg(id="12ab"), msg(id="3", messageType="HELP"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        page = parse_feed(body)
    assert [m.id for m in page.messages] == [1, 3]
    assert [m.type for m in page.messages] == ["TRACK", "HELP"]
    assert len(page.skipped) == 1
    reason = page.skipped[0]
    assert reason.startswith("message ?: ")
    assert '"12ab"' in reason
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [reason]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(msg(id=None), "message ?: no usable id (type TRACK)", id="no-id"),
        pytest.param(msg(id=""), 'message ?: unusable id "" (type TRACK)', id="blank-id"),
        pytest.param(msg(id="-5"), 'message ?: unusable id "-5" (type TRACK)', id="negative-id"),
        pytest.param(
            msg(id=str(2**63)),
            'message ?: unusable id "9223372036854775808" (type TRACK)',
            id="id-beyond-64-bit",
        ),
        pytest.param(
            msg(id="1" * 30),
            'message ?: unusable id "1111111111111111111…" (type TRACK)',
            id="id-huge",
        ),
        pytest.param(
            msg(messengerId=None), "message 1001: no messengerId (type TRACK)", id="no-messenger"
        ),
        pytest.param(
            msg(messengerId="  "), "message 1001: no messengerId (type TRACK)", id="blank-messenger"
        ),
        pytest.param(msg(messageType=None), "message 1001: no messageType", id="no-type"),
        pytest.param(msg(messageType=" "), "message 1001: no messageType", id="blank-type"),
        pytest.param(
            msg(unixTime="1700000000", dateTime=None, messageType=None, messengerId=None),
            "message 1001: no messengerId, no messageType",
            id="several",
        ),
    ],
)
def test_skip_reason(message: dict[str, object], reason: str) -> None:
    for body in (xml_page(message, msg(id="2")), json_page(message, msg(id="2"))):
        page = parse_feed(body)
        assert page.skipped == (reason,)
        assert [m.id for m in page.messages] == [2]


def test_non_object_json_message_is_skipped() -> None:
    body = json.dumps(
        {"response": {"feedMessageResponse": {"messages": {"message": ["x", dict(msg())]}}}}
    ).encode()
    page = parse_feed(body)
    assert page.skipped == ("message ?: not an object",)
    assert only(page).id == 1001


def test_skipped_help_still_names_its_type(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        page = parse_feed(json_page(msg(messageType="HELP", unixTime=None, messengerId=None)))
    assert page.messages == ()
    assert "HELP" in page.skipped[0]
    assert "HELP" in caplog.text


# --- message fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("latitude", "longitude", "expected"),
    [
        pytest.param("45.43249", "-111.63832", (45.43249, -111.63832), id="plain"),
        pytest.param("-99999.0", "-99999.0", (None, None), id="no-fix"),
        pytest.param("-99999", "-99999", (None, None), id="no-fix-int"),
        pytest.param("-99999.00000", "7.9", (None, None), id="no-fix-one-side"),
        pytest.param("abc", "7.9", (None, None), id="lat-garbage"),
        pytest.param("46.5", "", (None, None), id="lon-blank"),
        pytest.param(None, "7.9", (None, None), id="lat-missing"),
        pytest.param("90.0001", "7.9", (None, None), id="lat-out-of-range"),
        pytest.param("46.5", "-180.5", (None, None), id="lon-out-of-range"),
        pytest.param("NaN", "7.9", (None, None), id="nan"),
        pytest.param("46.5", "inf", (None, None), id="inf"),
        pytest.param("-90", "180", (-90.0, 180.0), id="edges"),
        pytest.param("0", "0", (0.0, 0.0), id="zero-is-a-position"),
        pytest.param(" 46.5 ", "7.9\n", (46.5, 7.9), id="padded"),
    ],
)
def test_position(latitude: str | None, longitude: str, expected: tuple[object, object]) -> None:
    m = only(parse_feed(xml_page(msg(latitude=latitude, longitude=longitude))))
    assert (m.latitude, m.longitude) == expected
    assert m.has_position is (expected[0] is not None)


def test_json_number_no_fix() -> None:
    m = only(
        parse_feed(json_page(msg(latitude=-99999, longitude=-99999.0, messageType="POWER-OFF")))
    )
    assert (m.latitude, m.longitude, m.type) == (None, None, "POWER-OFF")


def test_help_with_garbage_latitude_is_kept_without_position() -> None:
    page = parse_feed(json_page(msg(messageType="HELP", latitude="abc")))
    assert page.skipped == ()
    m = only(page)
    assert (m.type, m.latitude, m.longitude, m.has_position) == ("HELP", None, None, False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("SOS", "SOS", id="unknown-kept"),
        pytest.param(" sos\n", "SOS", id="stripped-uppercased"),
        pytest.param("help-cancel", "HELP-CANCEL", id="known-lowercase"),
        pytest.param("911", "911", id="digits"),
        pytest.param("Future Thing", "FUTURE THING", id="free-text"),
    ],
)
def test_message_type(raw: str, expected: str) -> None:
    assert only(parse_feed(json_page(msg(messageType=raw)))).type == expected


@pytest.mark.parametrize(
    ("unix_time", "date_time", "expected"),
    [
        pytest.param(None, "2013-04-02T06:28:03-0700", 1364909283, id="missing"),
        pytest.param("", "2013-04-02T06:28:03-0700", 1364909283, id="blank"),
        pytest.param("later", "2017-06-21T21:09:54+0000", 1498079394, id="garbage"),
        pytest.param("0", "2017-06-21T21:09:54+0000", 1498079394, id="zero"),
        pytest.param("1498079394", "2001-01-01T00:00:00+0000", 1498079394, id="unixTime-wins"),
        pytest.param("1498079394.0", None, 1498079394, id="float-text"),
        pytest.param("1498079394.7", None, 1498079394, id="fractional-floored"),
        pytest.param("1498079394", "not a date", 1498079394, id="bad-dateTime-kept-as-sent"),
        pytest.param("1498079394", "2017-06-21T21:09:54", 1498079394, id="naive-dateTime"),
    ],
)
def test_unix_time(unix_time: str | None, date_time: str | None, expected: int) -> None:
    fields = msg(unixTime=unix_time, dateTime=date_time)
    for body in (xml_page(fields), json_page(fields)):
        m = only(parse_feed(body))
        assert m.unix_time == expected
        assert m.date_time == date_time


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("398", 398, id="int"),
        pytest.param("-12", -12, id="negative"),
        pytest.param("12.0", 12, id="float-text"),
        pytest.param("12.5", None, id="fractional"),
        pytest.param("high", None, id="garbage"),
        pytest.param("-99999", None, id="no-fix-marker"),
        pytest.param("9" * 25, None, id="beyond-64-bit"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_altitude(raw: str | None, expected: int | None) -> None:
    assert only(parse_feed(xml_page(msg(altitude=raw)))).altitude == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            "  Your SPOT Trace has been powered off.",
            "Your SPOT Trace has been powered off.",
            id="leading",
        ),
        pytest.param("ok  \n", "ok", id="trailing"),
        pytest.param("   ", None, id="blank"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_content(raw: str | None, expected: str | None) -> None:
    for body in (xml_page(msg(messageContent=raw)), json_page(msg(messageContent=raw))):
        assert only(parse_feed(body)).content == expected


def test_lone_surrogate_in_json_text_is_replaced() -> None:
    m = only(parse_feed(json_page(msg(messageContent="\ud83d help", messengerName="\udc00Kim"))))
    assert (m.content, m.messenger_name) == ("? help", "?Kim")
    assert m.content is not None
    m.content.encode("utf-8")  # would raise on a lone surrogate


def test_markup_inside_json_is_not_an_html_page() -> None:
    m = only(parse_feed(json_page(msg(messageContent="<html> help </html>", messageType="HELP"))))
    assert (m.type, m.content) == ("HELP", "<html> help </html>")


def test_time_beyond_64_bit_falls_back_to_date_time() -> None:
    fields = msg(unixTime=str(10**30), dateTime="2017-06-21T21:09:54+0000")
    assert only(parse_feed(json_page(fields))).unix_time == 1498079394


def test_optional_fields_default() -> None:
    m = only(parse_feed(json_page(msg(messengerName=None))))
    assert m.messenger_name == "0-42"
    assert (m.altitude, m.model_id, m.battery, m.content, m.date_time, m.extra) == (
        None,
        None,
        None,
        None,
        None,
        (),
    )


def test_extra_is_sorted_and_keeps_unknown_fields() -> None:
    fields = {"@clientUnixTime": "0", **msg(zeta="z", alpha="a", messageDetail="", hidden="0")}
    for body in (xml_page(fields), json_page(fields)):
        assert only(parse_feed(body)).extra == (
            ("alpha", "a"),
            ("clientUnixTime", "0"),
            ("hidden", "0"),
            ("messageDetail", ""),
            ("zeta", "z"),
        )


def test_duplicate_ids_and_order_are_kept() -> None:
    body = json_page(msg(id=5, unixTime=100), msg(id=9, unixTime=300), msg(id=5, unixTime=200))
    assert [(m.id, m.unix_time) for m in parse_feed(body).messages] == [
        (5, 100),
        (9, 300),
        (5, 200),
    ]


def test_bom_whitespace_and_comment_before_xml() -> None:
    body = b"\xef\xbb\xbf \r\n" + xml_page(msg()).replace(b"<response>", b"<!-- hi --><response>")
    assert only(parse_feed(body)).id == 1001


def test_bom_before_json() -> None:
    assert only(parse_feed(b"\xef\xbb\xbf\n" + json_page(msg()))).id == 1001


# --- sniffing and dates -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"<response/>", "xml", id="xml"),
        pytest.param(b"\xef\xbb\xbf  \n<?xml", "xml", id="bom-space-xml"),
        pytest.param(b'{"response": {}}', "json", id="object"),
        pytest.param(b"\t[1]", "json", id="list"),
        pytest.param(b"\xef\xbb\xbf{", "json", id="bom-json"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"   \n", None, id="blank"),
        pytest.param(b"\xef\xbb\xbf", None, id="bom-only"),
        pytest.param(b"Service Unavailable", None, id="text"),
        pytest.param(b"\xff\xfe<\x00", None, id="utf-16-bom"),
    ],
)
def test_sniff_format(body: bytes, expected: str | None) -> None:
    assert sniff_format(body) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2017-09-04T21:19:17+0000", 1504559957, id="utc"),
        pytest.param("2013-04-02T06:28:03-0700", 1364909283, id="minus-0700"),
        pytest.param("2023-11-14T22:03:20+0530", 1699979600, id="plus-0530"),
        pytest.param("2023-11-14T22:03:20+05:30", 1699979600, id="colon-offset"),
        pytest.param("2017-09-04T21:19:17Z", 1504559957, id="zulu"),
        pytest.param(" 2017-09-04T21:19:17+0000\n", 1504559957, id="padded"),
    ],
)
def test_parse_spot_datetime(text: str, expected: int) -> None:
    assert parse_spot_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2017-09-04T21:19:17",
        "2017-09-04 21:19:17+0000",
        "2017-13-04T21:19:17+0000",
    ],
)
def test_parse_spot_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spot_datetime(text)


# --- speed --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_full_page_parses_fast(fmt: str) -> None:
    messages = [
        msg(
            id=str(1_700_000_000 + i),
            unixTime=str(1_700_000_000 + 300 * i),
            dateTime="2023-11-14T22:13:20+0000",
            messageContent="all fine",
            modelId="SPOT3",
            batteryState="GOOD",
            altitude="120",
            showCustomMsg="Y",
            hidden="0",
        )
        for i in range(50)
    ]
    body = xml_page(*messages) if fmt == "xml" else json_page(*messages)
    assert len(parse_feed(body).messages) == 50
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        parse_feed(body)
        best = min(best, time.perf_counter() - start)
    assert best < 0.002


# --- hostile values -----------------------------------------------------------

HELP = msg(id="77", messageType="HELP", latitude="46.5", longitude="7.9")
TEN_TO_309 = "1" + "0" * 309  # beyond the float range: float() raises OverflowError
TEN_TO_308 = "1" + "0" * 308  # within it, but no latitude


@pytest.mark.parametrize(
    ("fmt", "bad", "literals", "expected"),
    [
        # expected: (latitude, longitude, type) of the bad message, or its skip reason.
        pytest.param(
            "json",
            {"latitude": "@LAT@"},
            {"@LAT@": TEN_TO_309},
            (None, None, "TRACK"),
            id="json-int-latitude-beyond-float",
        ),
        pytest.param(
            "json",
            {"longitude": "@LON@"},
            {"@LON@": "-2" + "0" * 308},
            (None, None, "TRACK"),
            id="json-int-longitude-beyond-float",
        ),
        pytest.param(
            "json",
            {"messageType": "HELP", "latitude": "@LAT@", "longitude": "@LAT@"},
            {"@LAT@": TEN_TO_309},
            (None, None, "HELP"),
            id="json-help-with-huge-fix-is-still-help",
        ),
        pytest.param(
            "json",
            {"latitude": "@LAT@"},
            {"@LAT@": TEN_TO_308},
            (None, None, "TRACK"),
            id="json-int-latitude-1e308",
        ),
        pytest.param(
            "json",
            {"latitude": "@LAT@"},
            {"@LAT@": "1e999"},
            (None, None, "TRACK"),
            id="json-float-literal-1e999",
        ),
        pytest.param(
            "json",
            {"latitude": "@LAT@"},
            {"@LAT@": "9" * 5000},
            (None, None, "TRACK"),
            id="json-int-literal-beyond-int-guard",
        ),
        pytest.param(
            "json",
            {"id": "@ID@", "latitude": "@ID@"},
            {"@ID@": "9" * 5000},
            'message ?: unusable id "9999999999999999999…" (type TRACK)',
            id="json-huge-id-skipped-with-reason",
        ),
        pytest.param(
            "json",
            {"altitude": "@N@", "batteryState": "@N@", "modelId": "@N@", "unixTime": "@T@"},
            {"@N@": "7" * 5000, "@T@": "1700000000.25"},
            (46.5, 7.9, "TRACK"),
            id="json-huge-literals-elsewhere",
        ),
        pytest.param(
            "xml", {"latitude": TEN_TO_308}, {}, (None, None, "TRACK"), id="xml-latitude-309-digits"
        ),
        pytest.param("xml", {"longitude": "-1e999"}, {}, (None, None, "TRACK"), id="xml-1e999"),
        pytest.param(
            "xml",
            {"id": "9" * 5000, "messageType": "HELP"},
            {},
            'message ?: unusable id "9999999999999999999…" (type HELP)',
            id="xml-huge-id-skipped-with-reason",
        ),
    ],
)
def test_hostile_values_beside_a_help(
    fmt: str,
    bad: dict[str, object],
    literals: dict[str, str],
    expected: tuple[None, None, str] | str,
) -> None:
    fields = msg(**{"id": "2", **bad})
    if fmt == "xml":
        body = xml_page(fields, HELP)
    else:
        body = json_page(fields, HELP)
        for placeholder, literal in literals.items():
            body = body.replace(f'"{placeholder}"'.encode(), literal.encode())
    page = parse_feed(body)
    help_ = page.messages[-1]
    assert (help_.id, help_.type, help_.latitude, help_.longitude) == (77, "HELP", 46.5, 7.9)
    if isinstance(expected, str):
        assert page.skipped == (expected,)
        assert len(page.messages) == 1
    else:
        assert page.skipped == ()
        [other, _] = page.messages
        assert (other.id, other.latitude, other.longitude, other.type) == (2, *expected)


def test_huge_json_literals_do_not_sink_the_header() -> None:
    body = json_page(HELP, totalCount="@N@", feed={"id": "@N@", "name": "F"})
    body = body.replace(b'"@N@"', b"8" * 5000)
    page = parse_feed(body)
    assert only(page).type == "HELP"
    assert page.total_count is None
    assert page.feed_id == "8" * 5000  # kept as text, like any id SPOT sends


def test_lone_surrogates_in_extra_names_and_nested_values_are_replaced() -> None:
    body = json_page(msg(**{"odd\ud800": "x", "nested": {"\udc00k": ["v\ud83d"]}}))
    extra = only(parse_feed(body)).extra
    assert extra == (("nested", '{"?k":["v?"]}'), ("odd?", "x"))
    for name, value in extra:
        (name + value).encode("utf-8")  # would raise on a lone surrogate


def test_extra_value_too_deep_to_write_keeps_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json_page(msg(messageType="HELP", deep=[[["x"]]]))

    def too_deep(*_: object, **__: object) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(json, "dumps", too_deep)  # the body is already written
    m = only(parse_feed(body))
    assert (m.type, m.extra) == ("HELP", (("deep", "(unreadable)"),))


@pytest.mark.parametrize("page_of", [xml_page, json_page], ids=["xml", "json"])
def test_unforeseen_error_in_one_message_skips_only_it(
    page_of: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = parse_module._extra_text

    def flaky(value: object) -> str:
        if value == "boom":
            raise RuntimeError("a bug")
        return real(value)

    monkeypatch.setattr(parse_module, "_extra_text", flaky)
    body = page_of(msg(id="2", trap="boom"), HELP, msg(id="3", messageType=None, trap="boom"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        page = parse_feed(body)
    assert [(m.id, m.type) for m in page.messages] == [(77, "HELP")]
    assert page.skipped == (
        "message 2: unreadable (RuntimeError) (type TRACK)",
        "message 3: no messageType",
    )
    assert "RuntimeError: a bug" in caplog.text  # the traceback is logged


@pytest.mark.parametrize(
    ("page_of", "record_maker"),
    [(xml_page, "_xml_record"), (json_page, "_json_record")],
    ids=["xml", "json"],
)
def test_unforeseen_error_reading_one_record_skips_only_it(
    page_of: Any, record_maker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = getattr(parse_module, record_maker)
    calls = iter(range(100))

    def flaky(raw: Any) -> Any:
        if next(calls) == 0:
            raise KeyError("first")
        return real(raw)

    monkeypatch.setattr(parse_module, record_maker, flaky)
    page = parse_feed(page_of(msg(id="2"), HELP))
    assert page.skipped == ("message ?: unreadable (KeyError)",)
    assert only(page).id == 77


@pytest.mark.parametrize(
    ("body", "step"),
    [
        pytest.param(json_page(HELP), "_parse_json", id="json"),
        pytest.param(xml_page(HELP), "_parse_xml", id="xml"),
    ],
)
def test_unforeseen_page_error_is_a_feed_unavailable(
    body: bytes, step: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> FeedPage:
        raise IndexError("a bug")

    monkeypatch.setattr(parse_module, step, broken)
    with caplog.at_level(logging.ERROR, logger=LOGGER), pytest.raises(FeedUnavailable) as caught:
        parse_feed(body)
    assert "(IndexError)" in str(caught.value)
    assert "HELP" not in str(caught.value)  # the body is not quoted
    assert "IndexError: a bug" in caplog.text


# --- unusable times -----------------------------------------------------------

RECEIVED = 1_700_000_000.75
SPOT_MSG = Message(
    id=1,
    messenger_id="0-1",
    messenger_name="Kim",
    unix_time=1_699_999_000,
    type="HELP",
    extra=(("clientUnixTime", "0"), ("zeta", "z")),
)


@pytest.mark.parametrize(
    ("unix_time", "expected_time", "added"),
    [
        # added: the (name, value) that `extra` gains, None when the message is unchanged.
        pytest.param(1_699_999_000, 1_699_999_000, None, id="normal"),
        pytest.param(EARLIEST_TIME, EARLIEST_TIME, None, id="at-the-2007-floor"),
        pytest.param(
            EARLIEST_TIME - 1,
            1_700_000_000,
            (UNUSABLE_TIME, str(EARLIEST_TIME - 1)),
            id="just-before-2007",
        ),
        pytest.param(
            253_402_300_800, 1_700_000_000, (UNUSABLE_TIME, "253402300800"), id="year-10000"
        ),
        pytest.param(
            1_699_999_000_123,
            1_699_999_000,
            (MILLISECONDS_TIME, "1699999000123"),
            id="milliseconds-converted",
        ),
        pytest.param(
            9_999_999_999_999,
            1_700_000_000,
            (UNUSABLE_TIME, "9999999999999"),
            id="milliseconds-still-in-the-future",
        ),
        pytest.param(
            1_000_000_000_000,
            1_700_000_000,
            (UNUSABLE_TIME, "1000000000000"),
            id="milliseconds-before-2007",
        ),
        pytest.param(0, 1_700_000_000, (UNUSABLE_TIME, "0"), id="zero"),
        pytest.param(-5, 1_700_000_000, (UNUSABLE_TIME, "-5"), id="negative"),
        pytest.param(
            1_700_000_000 + LATEST_AHEAD,
            1_700_000_000 + LATEST_AHEAD,
            None,
            id="just-within-the-limit-ahead",
        ),
        pytest.param(
            1_700_000_001 + LATEST_AHEAD,
            1_700_000_000,
            (UNUSABLE_TIME, str(1_700_000_001 + LATEST_AHEAD)),
            id="a-second-beyond-the-limit-ahead",
        ),
    ],
)
def test_with_usable_time(
    unix_time: int, expected_time: int, added: tuple[str, str] | None
) -> None:
    message = replace(SPOT_MSG, unix_time=unix_time)
    result = with_usable_time(message, RECEIVED)
    if added is None:
        assert result is message
        return
    assert result.unix_time == expected_time
    assert result.extra == tuple(sorted([*SPOT_MSG.extra, added]))
    assert replace(result, unix_time=unix_time, extra=message.extra) == message


def test_with_usable_time_keeps_the_time_text_the_parser_could_not_read() -> None:
    message = replace(SPOT_MSG, unix_time=0, extra=((UNUSABLE_TIME, "soon"), ("a", "b")))
    result = with_usable_time(message, RECEIVED)
    assert result.extra == (("a", "b"), (UNUSABLE_TIME, "soon"))
    assert result.unix_time == int(RECEIVED)


@pytest.mark.parametrize("field", [UNUSABLE_TIME, "unixTimeMilliseconds"])
def test_a_feed_field_may_not_pose_as_what_the_service_records(field: str) -> None:
    for body in (xml_page(msg(**{field: "forged"})), json_page(msg(**{field: "forged"}))):
        assert field not in dict(only(parse_feed(body)).extra)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        pytest.param(msg(messageType="HELP", unixTime=None, dateTime=None), "missing",
                     id="no-time"),
        pytest.param(msg(messageType="HELP", unixTime="soon", dateTime="yesterday"), "soon",
                     id="bad-times"),
        pytest.param(msg(messageType="HELP", unixTime=str(10**30), dateTime=None), str(10**30),
                     id="time-beyond-64-bit"),
        pytest.param(msg(messageType="HELP", unixTime="-5", dateTime=None), "-5",
                     id="negative-time"),
    ],
)  # fmt: skip
def test_a_help_without_a_usable_time_is_kept_and_dated_when_it_arrives(
    message: dict[str, object], kept: str
) -> None:
    for body in (xml_page(message), json_page(message)):
        page = parse_feed(body)
        assert page.skipped == ()
        [m] = page.messages
        assert (m.type, m.unix_time, dict(m.extra)[UNUSABLE_TIME]) == ("HELP", 0, kept)
        dated = with_usable_time(m, RECEIVED)
        assert (dated.unix_time, dict(dated.extra)[UNUSABLE_TIME]) == (int(RECEIVED), kept)


def test_with_usable_time_on_a_parsed_message_from_the_year_10000() -> None:
    page = parse_feed(json_page(msg(messageType="HELP", unixTime=253402300800, extra="x")))
    message = with_usable_time(only(page), RECEIVED)
    assert (message.type, message.unix_time) == ("HELP", 1_700_000_000)
    assert message.extra == (("extra", "x"), (UNUSABLE_TIME, "253402300800"))


# --- properties (hypothesis) --------------------------------------------------

# Reproducible in CI: derandomized (same examples every run), no example database in the
# tree. Modest example counts keep all of them within a few seconds.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INT64 = 2**63 - 1

#: The HELP every generated page carries; whatever surrounds it, it must come out intact.
HELP_FIELDS = {
    "id": 424242,
    "messengerId": "0-HELP",
    "unixTime": 1_700_000_000,
    "messageType": "HELP",
    "latitude": 46.5,
    "longitude": 7.9,
}
HELP_MESSAGE = Message(
    id=424242,
    messenger_id="0-HELP",
    messenger_name="0-HELP",
    unix_time=1_700_000_000,
    type="HELP",
    latitude=46.5,
    longitude=7.9,
)

#: Number-like texts that broke, or could break, a conversion.
NUMBERISH = [
    TEN_TO_308,
    TEN_TO_309,
    "-" + TEN_TO_309,
    "9" * 5000,
    "1e999",
    "-1e999",
    "1E+400",
    "4.9e-324",
    "NaN",
    "-Infinity",
    "-99999",
    "-99999.0",
    "1_700_000_000",
    "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: float() takes them
    "0x10",
    " 46.5 ",
    "90.00001",
    "-0",
    "253402300800",
    "1700000000123",
    "1700000000.5",
    "2017-06-21T21:09:54+0000",
    "9999-12-31T23:59:59-2359",
    "0001-01-01T00:00:00+2359",
    "",
    " ",
]

FIELD_NAMES = [
    "id",
    "messengerId",
    "messengerName",
    "unixTime",
    "messageType",
    "latitude",
    "longitude",
    "altitude",
    "modelId",
    "batteryState",
    "messageContent",
    "dateTime",
    "showCustomMsg",
    "hidden",
    "messageDetail",
]


def check_page(page: FeedPage) -> None:
    """What every parsed page guarantees, whatever the feed sent."""
    assert isinstance(page, FeedPage)
    for reason in page.skipped:
        assert reason.startswith("message ")
        assert "unreadable (" not in reason, reason  # the per-message safety net never fires
    if page.total_count is not None:
        assert -INT64 <= page.total_count <= INT64
    for m in page.messages:
        assert type(m.id) is int
        assert 0 <= m.id <= INT64
        assert type(m.unix_time) is int
        # 0 only for a time that could not be read, whose text is kept for the alert.
        assert 0 < m.unix_time <= INT64 or (m.unix_time == 0 and UNUSABLE_TIME in dict(m.extra))
        assert m.messenger_id
        assert m.messenger_name
        assert m.type
        assert (m.latitude is None) == (m.longitude is None)
        if m.latitude is not None and m.longitude is not None:
            assert type(m.latitude) is float
            assert type(m.longitude) is float
            assert -90.0 <= m.latitude <= 90.0  # False for NaN; inf is out of range
            assert -180.0 <= m.longitude <= 180.0
        if m.altitude is not None:
            assert type(m.altitude) is int
            assert -INT64 <= m.altitude <= INT64
        assert list(m.extra) == sorted(m.extra)
        texts = [m.messenger_id, m.messenger_name, m.type, m.model_id, m.battery, m.content]
        for text in [*texts, m.date_time, *(t for pair in m.extra for t in pair)]:
            assert text is None or isinstance(text, str)
            if text is not None:
                text.encode("utf-8")  # no lone surrogate reaches the store or a notifier
        usable = with_usable_time(m, RECEIVED)
        assert EARLIEST_TIME <= usable.unix_time <= RECEIVED + LATEST_AHEAD


def parse_or_feed_error(body: bytes, fmt: Any = None) -> FeedPage | FeedError:
    try:
        return parse_feed(body, fmt)
    except FeedError as exc:  # any other exception fails the property
        return exc


# (a) any bytes ------------------------------------------------------------------

FIXTURE_BODIES = [load(name) for name in PAYLOADS]
FRAGMENTS = [
    b"<",
    b">",
    b"</message>",
    b"<message><id>1</id>",
    b"{",
    b"}",
    b"[",
    b'"',
    b",",
    b":",
    b"null",
    b'\\ud800"',
    b"&amp;",
    b"&#0;",
    b"&#x10FFFF;",
    b"<![CDATA[x]]>",
    b"<!-- c -->",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xff",
    b"[" * 60,
    b"{" * 60,
    *(n.encode() for n in NUMBERISH),
]


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    """A recorded payload with a few cuts, insertions and overwrites."""
    body = draw(st.sampled_from(FIXTURE_BODIES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        chunk = draw(st.sampled_from(FRAGMENTS) | st.binary(max_size=6))
        action = draw(st.sampled_from(["insert", "overwrite", "cut-after", "delete"]))
        if action == "insert":
            body = body[:at] + chunk + body[at:]
        elif action == "overwrite":
            body = body[:at] + chunk + body[at + len(chunk) :]
        elif action == "cut-after":
            body = body[:at]
        else:
            body = body[:at] + body[at + draw(st.integers(1, 40)) :]
    return body


ANY_BYTES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [b"<response>", b"<response><feedMessageResponse>", b'{"response":', b"\xef\xbb\xbf<"]
        ),
        st.binary(max_size=200),
    ),
    mutated_fixture(),
)


@PROPERTY
@given(body=ANY_BYTES, fmt=st.sampled_from([None, "xml", "json"]))
def test_property_any_bytes_give_a_page_or_a_feed_error(body: bytes, fmt: Any) -> None:
    result = parse_or_feed_error(body, fmt)
    if isinstance(result, FeedError):
        assert not str(result).startswith("unparseable"), result  # the page net never fires
    else:
        check_page(result)


# (b) JSON-shaped responses ------------------------------------------------------


@dataclass(frozen=True)
class RawJson:
    """A literal written into the JSON text as is (json.dumps cannot write 1e999)."""

    text: str


def to_json(value: object) -> str:
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)  # ASCII: lone surrogates become \ud800 escapes


#: Number literals as JSON text: some no json.dumps writes, some beyond int() or float.
JSON_LITERALS = [
    TEN_TO_308,
    TEN_TO_309,
    "-" + TEN_TO_309,
    "9" * 5000,
    "9" * 5000 + ".5",
    "1e999",
    "-1e999",
    "1E+400",
    "4.9e-324",
    "NaN",
    "-Infinity",
    "-99999",
    "-0",
    "253402300800",
    "1700000000123",
    "1700000000.5",
]

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NUMBERISH),
    st.builds(RawJson, st.sampled_from(JSON_LITERALS)),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def json_message(draw: st.DrawFn) -> object:
    """A SPOT message with a few fields replaced, dropped or added; now and then not one."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    base: dict[str, object] = {
        "id": draw(st.integers(0, INT64)),
        "messengerId": "0-1",
        "unixTime": 1_650_000_000,
        "messageType": draw(st.sampled_from(["TRACK", "HELP", "OK"])),
        "latitude": 46.5,
        "longitude": 7.9,
    }
    dropped = draw(st.sets(st.sampled_from(sorted(base)), max_size=2))
    changed = draw(
        st.dictionaries(
            st.sampled_from([*FIELD_NAMES, "@clientUnixTime"]) | st.text(max_size=6),
            JSON_VALUES,
            max_size=6,
        )
    )
    return {k: v for k, v in base.items() if k not in dropped} | changed


@PROPERTY
@given(
    others=st.lists(json_message(), max_size=5),
    at=st.integers(0, 5),
    header=st.dictionaries(
        st.sampled_from(["count", "totalCount", "activityCount", "feed"]), JSON_VALUES
    ),
    errors=st.none() | JSON_VALUES,
)
def test_property_json_response_keeps_the_help(
    others: list[object], at: int, header: dict[str, object], errors: object
) -> None:
    listed = [*others[:at], HELP_FIELDS, *others[at:]]
    messages: object = listed[0] if len(listed) == 1 else listed  # the lone-object quirk
    response: dict[str, object] = {
        "feedMessageResponse": {**header, "messages": {"message": messages}}
    }
    if errors is not None:
        response["errors"] = errors  # beside messages: messages win
    page = parse_feed(to_json({"response": response}).encode())
    check_page(page)
    assert HELP_MESSAGE in page.messages
    assert len(page.messages) + len(page.skipped) == len(listed)


# (c) XML-shaped responses -------------------------------------------------------

# Characters XML 1.0 allows (controls other than tab, LF and CR make the document invalid).
XML_TEXT = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters="\ufffe\uffff")
    | st.sampled_from("\t\n\r"),
    max_size=20,
)
XML_VALUES = XML_TEXT | st.sampled_from(NUMBERISH)
XML_NAMES = st.sampled_from(FIELD_NAMES) | st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True
)


@st.composite
def xml_message(draw: st.DrawFn) -> str:
    fields: dict[str, str] = {
        "id": str(draw(st.integers(0, INT64))),
        "messengerId": "0-1",
        "unixTime": "1650000000",
        "messageType": draw(st.sampled_from(["TRACK", "HELP", "OK"])),
        "latitude": "46.5",
        "longitude": "7.9",
    }
    for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=2)):
        del fields[name]
    fields |= draw(st.dictionaries(XML_NAMES, XML_VALUES, max_size=6))
    attrs = draw(st.dictionaries(XML_NAMES, XML_VALUES, max_size=2))
    head = "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())
    children = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return f"<message{head}>{children}</message>"


def xml_help() -> str:
    children = "".join(f"<{k}>{v}</{k}>" for k, v in HELP_FIELDS.items())
    return f"<message>{children}</message>"


@PROPERTY
@given(
    others=st.lists(xml_message(), max_size=5),
    at=st.integers(0, 5),
    header=st.dictionaries(st.sampled_from(["count", "totalCount", "activityCount"]), XML_VALUES),
)
def test_property_xml_response_keeps_the_help(
    others: list[str], at: int, header: dict[str, str]
) -> None:
    listed = [*others[:at], xml_help(), *others[at:]]
    head = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in header.items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><response><feedMessageResponse>'
        f"{head}<messages>{''.join(listed)}</messages></feedMessageResponse></response>"
    ).encode()
    page = parse_feed(body)
    check_page(page)
    assert HELP_MESSAGE in page.messages
    assert len(page.messages) + len(page.skipped) == len(listed)
