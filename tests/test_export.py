"""`alerter export`: a device's stored track as GPX, GeoJSON and CSV, read back by other
parsers (gpxpy, defusedxml, json, csv), and the command on a real state database."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gpxpy
import pytest
from defusedxml import ElementTree

from alerter.cli import main
from alerter.export import (
    CSV_COLUMNS,
    Format,
    choose_device,
    export,
    iso,
    parse_when,
    to_csv,
    to_geojson,
    to_gpx,
)
from alerter.models import Device, Message, Received
from alerter.store import Store

FEED_ID = "0onlEXPORTtestFEEDid0000000000001"
GPX_NS = {"g": "http://www.topografix.com/GPX/1/1"}
T0 = 1_700_000_000


def message(
    id: int,
    at: int,
    lat: float | None,
    lon: float | None,
    *,
    type: str = "TRACK",
    device: str = "0-1",
    name: str = "Anna",
    altitude: int | None = None,
    battery: str | None = "GOOD",
    content: str | None = None,
) -> Message:
    return Message(
        id=id, messenger_id=device, messenger_name=name, unix_time=at, type=type,
        latitude=lat, longitude=lon, altitude=altitude, battery=battery, content=content,
    )  # fmt: skip


#: Anna's track: stored out of order; one message without a GPS fix; awkward texts.
ANNA = [
    message(103, T0 + 600, 46.512345, 7.912345, altitude=2100, content='at "the hut", ok'),
    message(101, T0, 46.5, 7.9, type="OK", altitude=1500, content="Bien arrivée\nà Zermatt"),
    message(102, T0 + 300, None, None, type="HELP", battery="LOW", content="no fix"),
    message(104, T0 + 900, -0.00001, -179.999999, type="HELP", altitude=0, battery=None),
    message(105, T0 + 1200, 46.6, 7.95, type="CUSTOM", content="ctrl \x01\x1b chars <&>"),
]
ANNA_ORDER = [101, 102, 103, 104, 105]
ANNA_FIXES = [101, 103, 104, 105]
DEVICE = Device(id="0-1", name="Anna", feed_id=FEED_ID)


def received(messages: list[Message]) -> list[Received]:
    ordered = sorted(messages, key=lambda m: (m.unix_time, m.id))
    return [Received(m, FEED_ID, float(m.unix_time + 5)) for m in ordered]


@pytest.fixture
def track() -> list[Received]:
    return received(ANNA)


def by_id(ids: list[int]) -> list[Message]:
    messages = {m.id: m for m in ANNA}
    return [messages[i] for i in ids]


# -- GPX --------------------------------------------------------------------------------


def test_gpx_reads_back_with_gpxpy_in_order(track: list[Received]) -> None:
    gpx = gpxpy.parse(to_gpx(track, DEVICE))

    assert len(gpx.tracks) == 1
    [trk] = gpx.tracks
    assert trk.name == "Anna"
    assert len(trk.segments) == 1
    points = trk.segments[0].points
    expected = by_id(ANNA_FIXES)
    assert len(points) == len(expected)
    for p, m in zip(points, expected, strict=True):
        assert p.latitude == pytest.approx(m.latitude, abs=1e-7)
        assert p.longitude == pytest.approx(m.longitude, abs=1e-7)
        assert p.time == datetime.fromtimestamp(m.unix_time, UTC)
        assert p.elevation == (None if m.altitude is None else float(m.altitude))
        assert p.name == m.type
        assert p.comment == (f"battery {m.battery}" if m.battery else None)
        assert p.source == f"SPOT message {m.id}"
    assert points[1].description == 'at "the hut", ok'
    assert points[0].description == "Bien arrivée\nà Zermatt"
    # Characters XML cannot carry are replaced, the rest of the text is kept.
    assert points[3].description == "ctrl \ufffd\ufffd chars <&>"


def test_gpx_reads_back_with_defusedxml(track: list[Received]) -> None:
    root = ElementTree.fromstring(to_gpx(track, DEVICE).encode())

    assert root.tag == "{http://www.topografix.com/GPX/1/1}gpx"
    assert root.get("version") == "1.1"
    trkpts = root.findall("g:trk/g:trkseg/g:trkpt", GPX_NS)
    assert len(root.findall("g:trk", GPX_NS)) == 1
    assert len(root.findall("g:trk/g:trkseg", GPX_NS)) == 1
    got = [
        (
            float(p.get("lat")), float(p.get("lon")), p.findtext("g:time", namespaces=GPX_NS),
            p.findtext("g:name", namespaces=GPX_NS),
        )
        for p in trkpts
    ]  # fmt: skip
    assert got == [
        (pytest.approx(m.latitude, abs=1e-7), pytest.approx(m.longitude, abs=1e-7),
         iso(m.unix_time), m.type)
        for m in by_id(ANNA_FIXES)
    ]  # fmt: skip
    assert [p.findtext("g:ele", namespaces=GPX_NS) for p in trkpts] == [
        "1500.0", "2100.0", "0.0", None,
    ]  # fmt: skip


def test_gpx_leaves_out_messages_without_a_fix(track: list[Received]) -> None:
    result = export(Format.GPX, track, DEVICE, {})

    assert (result.written, result.left_out) == (4, 1)
    assert "no fix" not in result.text


def test_gpx_of_an_empty_track_is_valid() -> None:
    gpx = gpxpy.parse(to_gpx([], DEVICE))
    assert [len(s.points) for t in gpx.tracks for s in t.segments] == [0]


# -- GeoJSON ----------------------------------------------------------------------------

_GEOMETRIES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
               "MultiPolygon", "GeometryCollection"}  # fmt: skip


def _no_constants(name: str) -> float:
    raise AssertionError(f"{name} is not JSON (RFC 8259)")


def assert_position(position: Any) -> None:
    """RFC 7946 3.1.1: [longitude, latitude(, altitude)], WGS 84 decimal degrees."""
    assert isinstance(position, list)
    assert 2 <= len(position) <= 3
    assert all(isinstance(x, int | float) and not isinstance(x, bool) for x in position)
    lon, lat = position[:2]
    assert -180 <= lon <= 180
    assert -90 <= lat <= 90


def assert_feature_collection(doc: Any) -> None:
    """The members RFC 7946 requires of a FeatureCollection and its Features."""
    assert isinstance(doc, dict)
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc  # removed in RFC 7946
    assert isinstance(doc["features"], list)
    for f in doc["features"]:
        assert f["type"] == "Feature"
        assert "geometry" in f
        assert "properties" in f
        assert f["properties"] is None or isinstance(f["properties"], dict)
        if "id" in f:
            assert isinstance(f["id"], str | int | float)
        g = f["geometry"]
        assert g["type"] in _GEOMETRIES
        if g["type"] == "Point":
            assert_position(g["coordinates"])
        elif g["type"] == "LineString":
            assert len(g["coordinates"]) >= 2
            for position in g["coordinates"]:
                assert_position(position)


def load_geojson(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constants)


def test_geojson_is_a_valid_feature_collection(track: list[Received]) -> None:
    doc = load_geojson(to_geojson(track, DEVICE))

    assert_feature_collection(doc)
    line, *points = doc["features"]
    assert line["geometry"]["type"] == "LineString"
    assert [p["geometry"]["type"] for p in points] == ["Point"] * len(ANNA_FIXES)


def test_geojson_line_follows_the_points_in_order_as_lon_lat(track: list[Received]) -> None:
    doc = load_geojson(to_geojson(track, DEVICE))

    line, *points = doc["features"]
    expected = [[m.longitude, m.latitude] for m in by_id(ANNA_FIXES)]
    assert line["geometry"]["coordinates"] == expected
    assert [p["geometry"]["coordinates"] for p in points] == expected
    assert line["properties"]["device"] == "Anna"
    assert line["properties"]["points"] == 4
    assert (line["properties"]["start"], line["properties"]["end"]) == (iso(T0), iso(T0 + 1200))


def test_geojson_point_properties(track: list[Received]) -> None:
    doc = load_geojson(to_geojson(track, DEVICE))

    points = doc["features"][1:]
    for p, m in zip(points, by_id(ANNA_FIXES), strict=True):
        props = p["properties"]
        assert p["id"] == props["id"] == m.id
        assert props["type"] == m.type
        assert props["time"] == iso(m.unix_time)
        assert datetime.fromisoformat(props["time"]).timestamp() == m.unix_time
        assert props["battery"] == m.battery
        assert props["content"] == m.content
        assert props["altitude"] == m.altitude
    assert "no fix" not in json.dumps(doc)


@pytest.mark.parametrize(("count", "lines"), [(0, 0), (1, 0), (2, 1)])
def test_geojson_line_only_with_two_points_or_more(count: int, lines: int) -> None:
    messages = [message(i, T0 + 60 * i, 46.0 + i / 100, 7.0) for i in range(count)]
    doc = load_geojson(to_geojson(received(messages), DEVICE))

    assert_feature_collection(doc)
    kinds = [f["geometry"]["type"] for f in doc["features"]]
    assert kinds.count("LineString") == lines
    assert kinds.count("Point") == count


# -- CSV --------------------------------------------------------------------------------


def test_csv_reads_back_with_dictreader(track: list[Received]) -> None:
    text = to_csv(track, {FEED_ID: "Club"})
    rows = list(csv.DictReader(io.StringIO(text, newline="")))

    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["id"]) for r in rows] == ANNA_ORDER  # every message, oldest first
    for r, m in zip(rows, by_id(ANNA_ORDER), strict=True):
        assert r["time"] == iso(m.unix_time)
        assert r["time"].endswith("Z")
        assert int(r["unix_time"]) == m.unix_time
        assert r["type"] == m.type
        assert r["latitude"] == ("" if m.latitude is None else r["latitude"])
        if m.latitude is not None and m.longitude is not None:
            assert float(r["latitude"]) == m.latitude
            assert float(r["longitude"]) == m.longitude
        assert r["altitude"] == ("" if m.altitude is None else str(m.altitude))
        assert r["battery"] == (m.battery or "")
        assert r["content"] == (m.content or "")
        assert r["feed"] == "Club"
    no_fix = rows[1]
    assert (no_fix["type"], no_fix["latitude"], no_fix["longitude"]) == ("HELP", "", "")
    # Plain decimals, never an exponent a spreadsheet could misread.
    assert (rows[3]["latitude"], rows[3]["longitude"]) == ("-0.00001", "-179.999999")


def test_csv_without_a_feed_name_masks_the_feed_id(track: list[Received]) -> None:
    text = to_csv(track, {})
    assert FEED_ID not in text
    assert {r["feed"] for r in csv.DictReader(io.StringIO(text, newline=""))} == {"0onl…001"}


def test_csv_keeps_every_message(track: list[Received]) -> None:
    result = export(Format.CSV, track, DEVICE, {})
    assert (result.written, result.left_out) == (5, 0)


# -- times and devices ------------------------------------------------------------------

NOW = 1_714_600_000.0  # 2024-05-01T21:46:40Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC).timestamp()),
        ("2024-05-01T14:30", datetime(2024, 5, 1, 14, 30, tzinfo=UTC).timestamp()),
        ("2024-05-01T14:30:00Z", datetime(2024, 5, 1, 14, 30, tzinfo=UTC).timestamp()),
        ("2024-05-01T14:30+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC).timestamp()),
        ("6h", NOW - 6 * 3600),
        ("2d", NOW - 2 * 86400),
        ("1h30m", NOW - 5400),
        (" 2D ", NOW - 2 * 86400),
    ],
)
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "3600", "20", "2024-13-01", "6 hours"])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="neither a date/time"):
        parse_when(text, NOW)


DEVICES = [
    Device("0-1", "Anna", FEED_ID),
    Device("0-2", "Ben", FEED_ID),
    Device("0-3", "Cleo", FEED_ID),
    Device("0-4", "cleo", FEED_ID),
]


def test_choose_device_by_id_or_name_in_any_case() -> None:
    assert choose_device(DEVICES, "0-2").id == "0-2"
    assert choose_device(DEVICES, "anna").id == "0-1"
    assert choose_device(DEVICES, " ANNA ").id == "0-1"


def test_choose_device_refuses_an_ambiguous_name_with_the_ids() -> None:
    with pytest.raises(LookupError, match=r"2 devices are named 'CLEO'.*\(0-3, 0-4\)"):
        choose_device(DEVICES, "CLEO")
    assert choose_device(DEVICES, "0-4").name == "cleo"  # an id always settles it


def test_choose_device_unknown_lists_the_known_ones() -> None:
    with pytest.raises(LookupError, match=r"no device named 'Zoe'.*Anna \(0-1\), Ben \(0-2\)"):
        choose_device(DEVICES, "Zoe")


# -- the command ------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no .env and the settings in the environment."""
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALERTER_FEEDS", json.dumps([{"id": FEED_ID, "name": "Club"}]))
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


#: Message times for the command's tests: hours ago, since `--since 6h` reads the clock.
NOW_T = int(time.time())
HOURS = [30, 20, 10, 5, 1]


@pytest.fixture
def state(env: Path) -> Path:
    """Anna's track (one message without a fix) and Ben's, in a real state database."""
    store = Store.open(env / "state" / "alerter.db")
    store.ensure_feed(FEED_ID, NOW_T - 40 * 3600)
    anna = [
        message(200 + i, NOW_T - h * 3600, 46.0 + i / 10, 7.0 + i / 10, altitude=1000 + i)
        for i, h in enumerate(HOURS)
    ]
    anna[2] = message(202, NOW_T - 10 * 3600, None, None, type="HELP")
    ben = [message(300, NOW_T - 3600, 45.0, 6.0, device="0-2", name="Ben")]
    store.insert_messages(FEED_ID, [*anna, *ben], NOW_T, initial=False)
    store.close()
    return env


def test_export_gpx_to_stdout(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--device", "anna", "--format", "gpx"]) == 0

    out, err = capsys.readouterr()
    points = gpxpy.parse(out).tracks[0].segments[0].points
    assert [p.name for p in points] == ["TRACK"] * 4
    assert [p.time.timestamp() for p in points] == [NOW_T - h * 3600 for h in (30, 20, 5, 1)]
    assert err.strip() == "Anna (0-1): 4 messages as gpx to stdout; 1 without a GPS fix left out"


def test_export_geojson_and_csv(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--device", "0-1", "--format", "geojson"]) == 0
    out, err = capsys.readouterr()
    doc = load_geojson(out)
    assert_feature_collection(doc)
    assert len(doc["features"]) == 1 + 4
    assert "1 without a GPS fix left out" in err

    assert main(["export", "--device", "ANNA", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [r["id"] for r in rows] == ["200", "201", "202", "203", "204"]
    assert rows[2]["latitude"] == ""
    assert {r["feed"] for r in rows} == {"Club"}
    assert "left out" not in err
    assert FEED_ID not in out + err


def test_export_to_a_private_file(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = state / "anna.gpx"
    target.write_text("old")
    target.chmod(0o644)

    assert main(["export", "--device", "Anna", "--format", "gpx", "--output", str(target)]) == 0

    assert capsys.readouterr().out == ""
    assert len(gpxpy.parse(target.read_text()).tracks[0].segments[0].points) == 4
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["anna.gpx", "state"]  # no temp left


@pytest.mark.parametrize(
    ("window", "ids"),
    [
        (["--since", "6h"], ["203", "204"]),
        (["--until", "6h"], ["200", "201", "202"]),
        (["--since", "25h", "--until", "2h"], ["201", "202", "203"]),
        (["--since", iso(NOW_T - 20 * 3600)], ["201", "202", "203", "204"]),  # included
        (["--until", iso(NOW_T - 20 * 3600)], ["200", "201"]),  # included
        (["--since", "2h", "--until", "90m"], []),
    ],
)
def test_export_since_until(
    state: Path, capsys: pytest.CaptureFixture[str], window: list[str], ids: list[str]
) -> None:
    assert main(["export", "--device", "Anna", "--format", "csv", *window]) == 0

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out, newline="")))
    assert [r["id"] for r in rows] == ids


def test_export_unknown_device_is_an_error(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--device", "Zoe", "--format", "gpx"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert "no device named 'Zoe'" in err
    assert "Anna (0-1), Ben (0-2)" in err


def test_export_ambiguous_name_is_refused(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(state / "state" / "alerter.db")
    store.insert_messages(
        FEED_ID, [message(400, NOW_T, 1.0, 1.0, device="0-9", name="ANNA")], NOW_T, initial=False
    )
    store.close()

    assert main(["export", "--device", "anna", "--format", "csv"]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert "2 devices are named 'anna'" in err
    assert "(0-1, 0-9)" in err
    assert main(["export", "--device", "0-9", "--format", "csv"]) == 0


@pytest.mark.parametrize(
    "window", [["--since", "yesterday"], ["--until", "3600"], ["--since", "1h", "--until", "2h"]]
)
def test_export_bad_window_is_refused(
    state: Path, capsys: pytest.CaptureFixture[str], window: list[str]
) -> None:
    assert main(["export", "--device", "Anna", "--format", "csv", *window]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("alerter: ")


def test_export_without_state(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--device", "Anna", "--format", "gpx"]) == 1
    assert "no state yet" in capsys.readouterr().err
    assert not (env / "state").exists()  # nothing created


def test_export_unknown_format_is_a_usage_error(state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--device", "Anna", "--format", "kml"])
    assert exc.value.code == 2
