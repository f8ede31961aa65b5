"""Turn a SPOT feed response (bytes) into a `FeedPage`. Pure: no network, no clock.

Quirks handled (see the fixtures in tests/fixtures/ for real examples):

- JSON `messages.message` is a list, or a lone object when the page holds one
  message (dropping that object could drop a HELP); `messages` may be absent.
- XML may start with a UTF-8 BOM, whitespace and a comment; `clientUnixTime` is an
  attribute there and `@clientUnixTime` in JSON.
- Header counts (`count`, `totalCount`) lie: the messages present are what counts.
- Errors come as HTTP 200 bodies, `error` as one object or a list: E-0195 is an
  empty page; E-0160 and "not active" / "password" texts are `FeedConfigFault`;
  anything else, and anything that is not a SPOT response at all (HTML maintenance
  pages, truncated or garbage bodies), is `FeedUnavailable`.
- -99999 latitude/longitude means "no GPS fix"; types stay open strings; a
  missing `unixTime` is derived from `dateTime` (offset without a colon); a
  fractional `unixTime` is floored; `dateTime` text is kept as sent, parsed or not.
- Hostile values never sink a page: a coordinate that is not a finite number in
  range (huge integers, 1e999, text) means "no GPS fix"; any other unusable optional
  field is None; JSON integer literals too long to be data stay text (Python's int
  guard would otherwise fail the whole document).
- A message without a usable id, messengerId, messageType or time is skipped with a
  reason naming its type; so is one that trips an unforeseen bug (the reason names the
  exception). The rest of the page is kept. Anything unforeseen outside the messages
  is a `FeedUnavailable`: callers only ever see the project's own errors.

This module walks the page (sniffing, XML or JSON, errors, messages); what one field's
value means (numbers, times, text) is `alerter.spot.fields`. Its SPOT date functions and
`with_usable_time` are re-exported here, where callers import them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from alerter.errors import FeedConfigFault, FeedError, FeedUnavailable
from alerter.models import NO_POSITION, UNUSABLE_TIME, FeedPage, Message
from alerter.spot.fields import (
    EARLIEST_TIME,
    LATEST_AHEAD,
    MILLISECONDS_TIME,
    SPOT_DATE_FORMAT,
    Raw,
    derive_time,
    format_spot_datetime,
    parse_spot_datetime,
    to_float,
    to_int,
    to_text,
    to_time,
    valid_unicode,
    with_usable_time,
)

__all__ = [
    "EARLIEST_TIME",
    "LATEST_AHEAD",
    "MILLISECONDS_TIME",
    "SPOT_DATE_FORMAT",
    "format_spot_datetime",
    "parse_feed",
    "parse_spot_datetime",
    "sniff_format",
    "with_usable_time",
]

logger = logging.getLogger("alerter.spot.parse")

Format = Literal["xml", "json"]

_BOM = b"\xef\xbb\xbf"
_EXCERPT_LEN = 60
_NO_POSITION_INT = int(NO_POSITION)
_NO_MESSAGES = "E-0195"
_FEED_NOT_FOUND = "E-0160"
# A JSON integer literal longer than this stays text: no field holds such a number, and
# int() refuses literals over 4300 digits (ValueError), which would fail the whole page.
_MAX_JSON_INT_CHARS = 40
# An `extra` value that cannot be written as text.
_UNREADABLE = "(unreadable)"

# Fields mapped onto Message attributes; every other field goes to `extra`.
_KNOWN_FIELDS = frozenset(
    {
        "id", "messengerId", "messengerName", "unixTime", "messageType", "latitude",
        "longitude", "altitude", "modelId", "batteryState", "messageContent", "dateTime",
    }
)  # fmt: skip

#: `extra` keys the service writes itself: a feed field of that name is dropped.
_SERVICE_FIELDS = frozenset({UNUSABLE_TIME, MILLISECONDS_TIME})

# A message as the document holds it: a JSON value or an XML element.
_R = TypeVar("_R")


def sniff_format(body: bytes) -> Format | None:
    """Guess the body's format from its first meaningful byte: "xml", "json" or None."""
    head = body[len(_BOM) :] if body.startswith(_BOM) else body
    head = head.lstrip()[:1]
    if head == b"<":
        return "xml"
    if head in (b"{", b"["):
        return "json"
    return None


def parse_feed(body: bytes, fmt: Format | None = None) -> FeedPage:
    """Parse a SPOT message or latest response; raise FeedUnavailable or FeedConfigFault."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    body = body.lstrip()
    if not body:
        raise FeedUnavailable("empty body instead of a SPOT response")
    if _looks_like_html(body):
        raise FeedUnavailable(f"HTML page instead of a SPOT response: {_excerpt(body)}")
    if fmt is None:
        fmt = sniff_format(body)
        if fmt is None:
            raise FeedUnavailable(f"neither XML nor JSON: {_excerpt(body)}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FeedUnavailable(f"body is not UTF-8: {_excerpt(body)}") from None
    try:
        if fmt == "json":
            return _parse_json(text, body)
        return _parse_xml(text, body)
    except FeedError:
        raise
    except Exception as exc:
        # A bug, not the feed's fault; still a retryable "no usable data" for the caller,
        # never a library exception (the body is not quoted: it may hold a password).
        logger.exception("unforeseen error parsing a %s response", fmt)
        raise FeedUnavailable(f"unparseable {fmt.upper()} response ({type(exc).__name__})") from exc


# --- JSON -------------------------------------------------------------------


def _parse_json(text: str, body: bytes) -> FeedPage:
    try:
        doc = json.loads(text, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        # ValueError is JSONDecodeError; RecursionError is nesting too deep.
        raise FeedUnavailable(f"truncated or invalid JSON: {_excerpt(body)}") from exc
    response = doc.get("response") if isinstance(doc, dict) else None
    if not isinstance(response, dict):
        raise FeedUnavailable(f"JSON without a SPOT 'response' object: {_excerpt(body)}")
    feed_response = response.get("feedMessageResponse")
    errors = response.get("errors")
    if not isinstance(feed_response, dict):
        if errors is not None:
            return _classify_errors(list(_json_errors(errors)))
        raise FeedUnavailable(f"JSON SPOT response without messages or errors: {_excerpt(body)}")
    if errors is not None:
        _warn_errors_beside_messages(list(_json_errors(errors)))

    feed = feed_response.get("feed")
    feed_id = feed_name = None
    if isinstance(feed, dict):
        feed_id = to_text(feed.get("id"))
        feed_name = to_text(feed.get("name"))

    raws: list[Raw] = []
    messages = feed_response.get("messages")
    if isinstance(messages, dict):
        listed = messages.get("message")
        if isinstance(listed, list):
            raws = listed
        elif listed is not None:
            raws = [listed]  # the lone-message quirk: an object, not a list
    elif isinstance(messages, list):
        raws = messages

    return _build_page(
        raws, _json_record, feed_id, feed_name, to_int(feed_response.get("totalCount"))
    )


def _json_int(literal: str) -> int | str:
    """A JSON integer literal as an int, or as text when it is too long to be data."""
    return int(literal) if len(literal) <= _MAX_JSON_INT_CHARS else literal


def _json_errors(errors: Raw) -> Iterable[tuple[str | None, str]]:
    """(code, text) of each error in `errors.error`, an object or a list of them."""
    items = errors.get("error") if isinstance(errors, dict) else errors
    if not isinstance(items, list):
        items = [items]
    for item in items:
        if isinstance(item, dict):
            yield to_text(item.get("code")), to_text(item.get("text")) or ""
        elif item is not None:
            yield None, to_text(item) or ""


def _json_record(raw: Raw) -> dict[str, Raw] | None:
    if not isinstance(raw, dict):
        return None
    return {(k[1:] if k.startswith("@") else k): v for k, v in raw.items()}


# --- XML --------------------------------------------------------------------


def _parse_xml(text: str, body: bytes) -> FeedPage:
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise FeedUnavailable(f"XML with a DTD or entities refused: {type(exc).__name__}") from exc
    except ParseError as exc:
        raise FeedUnavailable(f"truncated or invalid XML ({exc}): {_excerpt(body)}") from exc
    if root.tag != "response":
        raise FeedUnavailable(f"XML root <{_clip(root.tag)}> is not a SPOT response")
    feed_response = root.find("feedMessageResponse")
    errors = root.find("errors")
    if feed_response is None:
        if errors is not None:
            return _classify_errors(_xml_errors(errors))
        raise FeedUnavailable(f"XML SPOT response without messages or errors: {_excerpt(body)}")
    if errors is not None:
        _warn_errors_beside_messages(_xml_errors(errors))

    feed = feed_response.find("feed")
    feed_id = feed_name = None
    if feed is not None:
        feed_id = to_text(feed.findtext("id"))
        feed_name = to_text(feed.findtext("name"))

    elements: list[Element] = []
    messages = feed_response.find("messages")
    if messages is not None:
        elements = messages.findall("message")

    return _build_page(
        elements, _xml_record, feed_id, feed_name, to_int(feed_response.findtext("totalCount"))
    )


def _xml_errors(errors: Element) -> list[tuple[str | None, str]]:
    return [
        (to_text(error.findtext("code")), to_text(error.findtext("text")) or "")
        for error in errors.iter("error")
    ]


def _xml_record(element: Element) -> dict[str, Raw]:
    record: dict[str, Raw] = dict(element.attrib)
    for child in element:
        record[child.tag] = child.text or ""
    return record


# --- errors -----------------------------------------------------------------


def _classify_errors(errors: list[tuple[str | None, str]]) -> FeedPage:
    """An error body: an empty page for E-0195 alone, else the matching exception."""
    if not errors:
        raise FeedUnavailable("SPOT error response without any error")
    for code, text in errors:
        lowered = text.lower()
        if code == _FEED_NOT_FOUND or "not active" in lowered or "password" in lowered:
            raise FeedConfigFault(code, _clip(text) or "feed refused")
    for code, text in errors:
        if code != _NO_MESSAGES and not (code is None and text.lower() == "no messages to display"):
            raise FeedUnavailable(f"SPOT error {code or '(no code)'}: {_clip(text) or '(no text)'}")
    return FeedPage()


def _warn_errors_beside_messages(errors: Iterable[tuple[str | None, str]]) -> None:
    # Messages win: they may hold a HELP, and an error beside them is not seen in practice.
    for code, text in errors:
        logger.warning("SPOT error %s beside messages, ignored: %s", code, _clip(text))


# --- messages ---------------------------------------------------------------


def _build_page(
    raws: Iterable[_R],
    to_record: Callable[[_R], dict[str, Raw] | None],
    feed_id: str | None,
    feed_name: str | None,
    total_count: int | None,
) -> FeedPage:
    messages: list[Message] = []
    skipped: list[str] = []
    for raw in raws:
        record: dict[str, Raw] | None = None
        try:
            record = to_record(raw)
            result = _to_message(record)
        except Exception as exc:
            # An unforeseen bug costs this message, never the page (which may hold a HELP).
            result = _crash_reason(record, exc)
            logger.warning("%s", result, exc_info=True)
            skipped.append(result)
            continue
        if isinstance(result, Message):
            messages.append(result)
        else:
            logger.warning("%s", result)
            skipped.append(result)
    return FeedPage(
        messages=tuple(messages),
        skipped=tuple(skipped),
        feed_id=feed_id,
        feed_name=feed_name,
        total_count=total_count,
    )


def _to_message(record: Mapping[str, Raw] | None) -> Message | str:
    """A Message, or the reason the record cannot be one."""
    if record is None:
        return "message ?: not an object"
    raw_id = record.get("id")
    message_id = to_int(raw_id)
    if message_id is not None and message_id < 0:
        message_id = None
    messenger_id = to_text(record.get("messengerId"))
    type_text = to_text(record.get("messageType"))
    message_type = type_text.upper() if type_text else None
    date_time = to_text(record.get("dateTime"))
    unix_time = to_time(record.get("unixTime"))
    if (unix_time is None or unix_time <= 0) and date_time is not None:
        unix_time = derive_time(date_time)

    if message_id is None or messenger_id is None or message_type is None:
        return _skip_reason(raw_id, message_id, messenger_id, message_type)
    # A HELP with an unusable time is still a HELP: kept with time 0 and the text it
    # came with; `with_usable_time` dates it when it reaches the service.
    unreadable_time: tuple[tuple[str, str], ...] = ()
    if unix_time is None or unix_time <= 0:
        sent = record.get("unixTime")
        text = _extra_text(sent) if sent is not None else (date_time or "missing")
        unix_time, unreadable_time = 0, ((UNUSABLE_TIME, text),)

    latitude = to_float(record.get("latitude"))
    longitude = to_float(record.get("longitude"))
    if (
        latitude is None
        or longitude is None
        or not -90.0 <= latitude <= 90.0
        or not -180.0 <= longitude <= 180.0
    ):
        # Covers NO_POSITION (-99999) too: it is out of range in any spelling.
        latitude = longitude = None
    altitude = to_int(record.get("altitude"))
    battery = to_text(record.get("batteryState"))
    return Message(
        id=message_id,
        messenger_id=messenger_id,
        messenger_name=to_text(record.get("messengerName")) or messenger_id,
        unix_time=unix_time,
        type=message_type,
        latitude=latitude,
        longitude=longitude,
        altitude=altitude if altitude != _NO_POSITION_INT else None,
        model_id=to_text(record.get("modelId")),
        battery=battery.upper() if battery else None,
        content=to_text(record.get("messageContent")),
        date_time=date_time,
        extra=tuple(
            sorted(
                [
                    *(
                        (valid_unicode(name), _extra_text(value))
                        for name, value in record.items()
                        # A feed field may not pose as what the service itself records.
                        if name not in _KNOWN_FIELDS and name not in _SERVICE_FIELDS
                    ),
                    *unreadable_time,
                ]
            )
        ),
    )


def _skip_reason(
    raw_id: Raw,
    message_id: int | None,
    messenger_id: str | None,
    message_type: str | None,
) -> str:
    problems: list[str] = []
    if message_id is None:
        problems.append("no usable id" if raw_id is None else f"unusable id {_quote(raw_id)}")
    if messenger_id is None:
        problems.append("no messengerId")
    if message_type is None:
        problems.append("no messageType")
    label = "?" if message_id is None else str(message_id)
    # The type tells the reader whether a lost HELP is at stake.
    kind = f" (type {_clip(message_type)})" if message_type else ""
    return f"message {label}: {', '.join(problems)}{kind}"


def _crash_reason(record: Mapping[str, Raw] | None, exc: Exception) -> str:
    """The skip reason for a message whose conversion raised: id and type when readable."""
    label, kind = "?", ""
    try:
        if record is not None:
            message_id = to_int(record.get("id"))
            label = "?" if message_id is None or message_id < 0 else str(message_id)
            type_text = to_text(record.get("messageType"))
            kind = f" (type {_clip(type_text.upper())})" if type_text else ""
    except Exception:  # noqa: S110 - the reason stays generic; the message is skipped anyway
        pass
    return f"message {label}: unreadable ({type(exc).__name__}){kind}"


def _extra_text(value: Raw) -> str:
    """A field `Message` has no attribute for, as the text kept in `extra`."""
    # Here beside `_to_message`, its one caller: tests patch it here to break one message.
    if value is None:
        return ""
    if isinstance(value, str):
        return valid_unicode(value).strip()
    if isinstance(value, bool | dict | list):
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (RecursionError, ValueError):
            # Nested about as deep as json.loads allows: not worth the message it is in.
            return _UNREADABLE
        # Nested JSON may hold lone surrogates too (in keys or values).
        return valid_unicode(text)
    return str(value)


# --- text helpers -----------------------------------------------------------


def _looks_like_html(body: bytes) -> bool:
    # Only markup counts: a JSON message may quote "<html" and must not sink its page.
    if not body.startswith(b"<"):
        return False
    head = body[:512].lower()
    return head.startswith(b"<!doctype html") or (b"<html" in head and b"<response" not in head)


def _clip(text: str | None, limit: int = _EXCERPT_LEN) -> str:
    """Printable, single-spaced, at most `limit` characters."""
    if not text:
        return ""
    clean = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _excerpt(body: bytes) -> str:
    """A short, sanitized quote of a body for an error message; never the whole body."""
    return f'"{_clip(body[: _EXCERPT_LEN * 4].decode("utf-8", errors="replace"))}"'


def _quote(value: Raw) -> str:
    return f'"{_clip(str(value), 20)}"'
