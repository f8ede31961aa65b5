"""A device's stored track as GPX, GeoJSON or CSV (`alerter export`).

Pure: the messages come in (`Received`, oldest first, as `Store.track` gives them), text
goes out; no I/O and no clock (`parse_when` is handed `now`).

- GPX 1.1 through gpxpy: one track, one segment, a point per message with a GPS fix:
  time, elevation (the altitude when SPOT gave one), `name` = the message type, `cmt` =
  the battery, `desc` = the message's text, `src` = the SPOT message id.
- GeoJSON (RFC 7946): a FeatureCollection holding a LineString of the track (when it
  has two points or more), then a Point Feature per message with a fix; coordinates
  are `[longitude, latitude]` (WGS 84), the altitude is a property. A track crossing
  the antimeridian is not cut (RFC 7946 3.1.9 asks for that; SPOT users rarely do).
- CSV (RFC 4180, the csv module's quoting): a header and a row per message, those
  without a fix included, with empty coordinates.

Times are UTC, ISO 8601 with a `Z`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import gpxpy.gpx

from alerter.durations import parse_duration
from alerter.models import Device, Received
from alerter.settings import mask_id


class Format(StrEnum):
    """The formats `alerter export` writes."""

    GPX = "gpx"
    GEOJSON = "geojson"
    CSV = "csv"


#: The CSV columns, in order.
CSV_COLUMNS = (
    "id", "time", "unix_time", "type", "latitude", "longitude", "altitude", "battery",
    "content", "feed",
)  # fmt: skip

# Characters XML 1.0 cannot carry at all (a device's text is not checked by SPOT).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A duration the way admins write it, with a unit: 6h, 2d, 1h30m (a bare number is
# refused: `20240501` could be a date as well as seconds).
_AGO = re.compile(r"\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Exported:
    """An export's text, and how many messages it left out (no GPS fix)."""

    text: str
    written: int
    left_out: int


def iso(t: float) -> str:
    """`2024-05-01T12:00:00Z` (fractions of a second only when there are some)."""
    at = datetime.fromtimestamp(t, UTC)
    return at.isoformat(timespec="seconds" if at.microsecond == 0 else "milliseconds").replace(
        "+00:00", "Z"
    )


def parse_when(text: str, now: float) -> float:
    """POSIX seconds from an ISO 8601 date or time (UTC unless it carries an offset; a
    date alone is its midnight) or a duration ago (`6h`, `2d`, `1h30m`: a unit is
    required). ValueError with a readable message otherwise."""
    value = text.strip()
    if _AGO.fullmatch(value):
        return now - parse_duration(value.replace(" ", ""))
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date/time (2024-05-01, 2024-05-01T14:30, "
            "2024-05-01T14:30+02:00) nor a duration ago (6h, 2d)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def choose_device(devices: Iterable[Device], key: str) -> Device:
    """The device whose messenger id is `key`, else whose name is `key` (case-insensitive).
    LookupError, with a message for the admin, when none or several match."""
    known = list(devices)
    wanted = key.strip()
    by_id = [d for d in known if d.id.casefold() == wanted.casefold()]
    if by_id:
        return by_id[0]
    named = [d for d in known if d.name.casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(sorted(d.id for d in named))
        raise LookupError(f"{len(named)} devices are named {key!r}: give one of their ids ({ids})")
    names = ", ".join(sorted(f"{d.name} ({d.id})" for d in known)) or "none yet"
    raise LookupError(f"no device named {key!r} or with that id; known devices: {names}")


def export(
    fmt: Format, track: Sequence[Received], device: Device, feed_names: Mapping[str, str]
) -> Exported:
    """The track in `fmt`; `feed_names`: feed id -> display name (CSV only)."""
    fixes = [r for r in track if r.message.has_position]
    if fmt is Format.GPX:
        return Exported(to_gpx(track, device), len(fixes), len(track) - len(fixes))
    if fmt is Format.GEOJSON:
        return Exported(to_geojson(track, device), len(fixes), len(track) - len(fixes))
    return Exported(to_csv(track, feed_names), len(track), 0)


def _decimal(value: float | None) -> str:
    """A coordinate as plain decimals, as precise as stored (`0.00001`, never `1e-05`)."""
    return "" if value is None else format(Decimal(repr(value)), "f")


def _xml_text(value: str | None) -> str | None:
    return None if value is None else _NOT_XML.sub("\ufffd", value)


def to_gpx(track: Sequence[Received], device: Device) -> str:
    """GPX 1.1: one track, one segment, a point per message with a GPS fix."""
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "spot-alerter"
    trk = gpxpy.gpx.GPXTrack(
        name=_xml_text(device.name), description=_xml_text(f"SPOT messenger {device.id}")
    )
    segment = gpxpy.gpx.GPXTrackSegment()
    for r in track:
        m = r.message
        if m.latitude is None or m.longitude is None:
            continue
        point = gpxpy.gpx.GPXTrackPoint(
            latitude=m.latitude,
            longitude=m.longitude,
            elevation=None if m.altitude is None else float(m.altitude),
            time=datetime.fromtimestamp(m.unix_time, UTC),
            name=_xml_text(m.type),
            comment=_xml_text(f"battery {m.battery}") if m.battery else None,
        )
        point.description = _xml_text(m.content)
        point.source = f"SPOT message {m.id}"
        segment.points.append(point)
    trk.segments.append(segment)
    gpx.tracks.append(trk)
    return str(gpx.to_xml(version="1.1"))


def to_geojson(track: Sequence[Received], device: Device) -> str:
    """An RFC 7946 FeatureCollection: the track's LineString, then a Point per message."""
    fixes = [r.message for r in track if r.message.has_position]
    features: list[dict[str, Any]] = []
    if len(fixes) >= 2:
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[m.longitude, m.latitude] for m in fixes],
                },
                "properties": {
                    "device": device.name,
                    "messenger_id": device.id,
                    "points": len(fixes),
                    "start": iso(fixes[0].unix_time),
                    "end": iso(fixes[-1].unix_time),
                },
            }
        )
    for m in fixes:
        features.append(
            {
                "type": "Feature",
                "id": m.id,
                "geometry": {"type": "Point", "coordinates": [m.longitude, m.latitude]},
                "properties": {
                    "id": m.id,
                    "device": device.name,
                    "type": m.type,
                    "time": iso(m.unix_time),
                    "unix_time": m.unix_time,
                    "altitude": m.altitude,
                    "battery": m.battery,
                    "content": m.content,
                },
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    return json.dumps(collection, ensure_ascii=False, indent=1, allow_nan=False) + "\n"


def to_csv(track: Sequence[Received], feed_names: Mapping[str, str]) -> str:
    """A header and a row per message; messages without a fix have empty coordinates."""
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF, quotes where a field needs them
    writer.writerow(CSV_COLUMNS)
    for r in track:
        m = r.message
        writer.writerow(
            (
                m.id, iso(m.unix_time), m.unix_time, m.type,
                _decimal(m.latitude), _decimal(m.longitude),
                "" if m.altitude is None else m.altitude,
                m.battery or "", m.content or "", feed_names.get(r.feed_id) or mask_id(r.feed_id),
            )
        )  # fmt: skip
    return out.getvalue()
