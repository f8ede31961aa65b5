"""SPOT response bodies, as bytes: message pages and error bodies, in XML and JSON.

Pure functions, no HTTP: the simulator serves them, and tests feed them straight to
the parser. The shapes follow SPOT_API.md: feed fields first, messages newest first as
given, one message in JSON as an object rather than a list, errors sent with HTTP 200.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, quote_plus, urlencode
from xml.sax.saxutils import escape

from alerter.models import NO_POSITION, Message
from alerter.spot.parse import format_spot_datetime

__all__ = [
    "CONTENT_TYPES",
    "DAYS_RANGE",
    "empty_body",
    "error_body",
    "error_to_json",
    "error_to_xml",
    "notfound_body",
    "page_body",
    "password_body",
    "to_json",
    "to_xml",
]

#: SPOT keeps a feed's messages this long.
DAYS_RANGE = 7

#: The Content-Type SPOT sends for each format.
CONTENT_TYPES = {"xml": "application/xml", "json": "application/json"}

_XML_DECL = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'


def _feed_fields(feed_id: str, name: str) -> dict[str, Any]:
    return {
        "id": feed_id,
        "name": name,
        "description": name,
        "status": "ACTIVE",
        "usage": 0,
        "daysRange": DAYS_RANGE,
        "detailedMessageShown": True,
        "type": "SHARED_PAGE",
    }


def _message_fields(m: Message) -> dict[str, Any]:
    """One message's fields in SPOT's order; absent battery, content, altitude omitted."""
    d: dict[str, Any] = {
        "id": m.id,
        "messengerId": m.messenger_id,
        "messengerName": m.messenger_name,
        "unixTime": m.unix_time,
        "messageType": m.type,
        "latitude": NO_POSITION if m.latitude is None else m.latitude,
        "longitude": NO_POSITION if m.longitude is None else m.longitude,
        "modelId": m.model_id,
        "showCustomMsg": "Y",
        "dateTime": m.date_time or format_spot_datetime(m.unix_time),
    }
    if m.model_id is None:
        del d["modelId"]
    if m.battery is not None:
        d["batteryState"] = m.battery
    d["hidden"] = 0
    if m.content is not None:
        d["messageContent"] = m.content
    if m.altitude is not None:
        d["altitude"] = m.altitude
    return d


def to_json(
    messages: Sequence[Message],
    *,
    feed_id: str,
    feed_name: str | None = None,
    total: int | None = None,
) -> bytes:
    """A SPOT JSON page; exactly one message is an object, not a list, as SPOT sends it."""
    items = [{"@clientUnixTime": "0", **_message_fields(m)} for m in messages]
    body = {
        "response": {
            "feedMessageResponse": {
                "count": len(items),
                "feed": _feed_fields(feed_id, feed_id if feed_name is None else feed_name),
                "totalCount": len(items) if total is None else total,
                "activityCount": 0,
                "messages": {"message": items[0] if len(items) == 1 else items},
            }
        }
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _xml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def to_xml(
    messages: Sequence[Message],
    *,
    feed_id: str,
    feed_name: str | None = None,
    total: int | None = None,
) -> bytes:
    """A SPOT XML page."""
    feed = _feed_fields(feed_id, feed_id if feed_name is None else feed_name)
    parts = [
        "<response><feedMessageResponse>",
        f"<count>{len(messages)}</count><feed>",
        *(f"<{k}>{_xml_value(v)}</{k}>" for k, v in feed.items()),
        "</feed>",
        f"<totalCount>{len(messages) if total is None else total}</totalCount>",
        "<activityCount>0</activityCount><messages>",
    ]
    for m in messages:
        parts.append('<message clientUnixTime="0">')
        parts.extend(f"<{k}>{_xml_value(v)}</{k}>" for k, v in _message_fields(m).items())
        parts.append("</message>")
    parts.append("</messages></feedMessageResponse></response>")
    return _XML_DECL + "".join(parts).encode()


def page_body(
    fmt: str, messages: Sequence[Message], *, feed_id: str, feed_name: str, total: int
) -> bytes:
    """A SPOT page in `fmt` ("xml" or "json")."""
    serialize = to_xml if fmt == "xml" else to_json
    return serialize(messages, feed_id=feed_id, feed_name=feed_name, total=total)


def error_to_json(code: str | None, text: str, description: str) -> bytes:
    """A SPOT JSON error body (sent with HTTP 200); `code` None omits it."""
    error = {"code": code, "text": text, "description": description}
    if code is None:
        del error["code"]
    return json.dumps({"response": {"errors": {"error": error}}}, separators=(",", ":")).encode()


def error_to_xml(code: str | None, text: str, description: str) -> bytes:
    """A SPOT XML error body (sent with HTTP 200); `code` None omits it."""
    code_el = "" if code is None else f"<code>{escape(code)}</code>"
    return (
        _XML_DECL
        + (
            f"<response><errors><error>{code_el}<text>{escape(text)}</text>"
            f"<description>{escape(description)}</description></error></errors></response>"
        ).encode()
    )


def error_body(fmt: str, code: str | None, text: str, description: str) -> bytes:
    """A SPOT error body in `fmt` ("xml" or "json")."""
    return (error_to_xml if fmt == "xml" else error_to_json)(code, text, description)


def echo_body(fmt: str, query: Mapping[str, str]) -> bytes:
    """An error body that quotes the request back, the password in every spelling a
    careless server might use: as sent (percent-encoded either way), decoded, cut short."""
    password = query.get("feedPassword", "")
    sent = urlencode(query)
    spellings = [sent, quote(password, safe=""), quote_plus(password), password,
                 password[: max(1, len(password) // 2 + 1)] + "…"]  # fmt: skip
    return error_body(fmt, "E-0999", f"Bad request {sent}", " | ".join(spellings))


def empty_body(feed_id: str, fmt: str) -> bytes:
    """SPOT's answer when no message is in range (an error, with SPOT's own typo)."""
    return error_body(
        fmt,
        "E-0195",
        "No Messages to display",
        f"No displayable messages found found for feed: {feed_id}",
    )


def notfound_body(feed_id: str, fmt: str) -> bytes:
    """SPOT's answer for a feed id it does not know."""
    return error_body(fmt, "E-0160", "Feed Not Found", f"Feed with Id: {feed_id} not found.")


def password_body(feed_id: str, fmt: str) -> bytes:
    """SPOT's answer for a missing or wrong feed password (it has no code)."""
    return error_body(
        fmt, None, "Feed Password required", f"Feed Password required for feed: {feed_id}"
    )
