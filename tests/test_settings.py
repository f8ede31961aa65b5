"""Settings: every value validated with a clear message naming the variable, secrets masked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alerter.durations import format_duration, parse_duration
from alerter.errors import ConfigError
from alerter.settings import OFFICIAL_BASE_URL, Settings, load_settings, mask_id

LOCAL = "http://127.0.0.1:9/feed"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("0.5", 0.5),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (" 2H ", 7200.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10 minutes", "m", "-5", "1x", "", True, None, [1], "inf"])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (59.6, "1 min"), (720, "12 min"), (3600, "1 h"), (3900, "1 h 05 min"),
     (90000, "1 d 1 h"), (-3, "0s")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_defaults_match_the_product() -> None:
    s = load_settings(env_file=None)
    assert s.spot_base_url == OFFICIAL_BASE_URL
    assert (s.poll_interval, s.feed_spacing) == (150.0, 2.0)
    assert s.feed_failing_after == 900.0
    assert s.first_start_lookback == 6 * 3600.0
    assert s.admin_tag == "admin"
    assert s.http_listen == "127.0.0.1:8787"
    assert s.database == Path("state") / "alerter.db"


def test_feeds_json_and_durations_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ALERTER_FEEDS", '[{"id": "0abcdefghijk", "password": "hunter2", "name": "Club"}, '
        '{"id": "0zzzzzzzzzzz"}]'
    )  # fmt: skip
    monkeypatch.setenv("ALERTER_FEED_FAILING_AFTER", "20m")
    monkeypatch.setenv("ALERTER_PUBLIC_URL", "")  # empty means unset
    s = load_settings(env_file=None)
    assert [f.display_name for f in s.feeds] == ["Club", "0zzz…zzz"]
    assert s.feeds[0].password is not None
    assert s.feeds[0].password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.feeds)
    assert s.feed_failing_after == 1200.0
    assert s.public_url is None


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("ALERTER_TIMEZONE=Europe/Zurich\nALERTER_ADMIN_TAG=ops\n")
    s = load_settings(env_file=env)
    assert (s.timezone, s.admin_tag) == ("Europe/Zurich", "ops")


@pytest.mark.parametrize(
    ("overrides", "variable", "phrase"),
    [
        pytest.param({"poll_interval": 60}, "ALERTER_POLL_INTERVAL", "below SPOT's limit of 150s",
                     id="interval-floor"),
        pytest.param({"feed_spacing": 1}, "ALERTER_FEED_SPACING", "below SPOT's limit of 2s",
                     id="spacing-floor"),
        pytest.param({"poll_interval": "ten"}, "ALERTER_POLL_INTERVAL", "duration", id="bad-dur"),
        pytest.param({"timezone": "Mars/Olympus"}, "ALERTER_TIMEZONE", "unknown time zone",
                     id="zone"),
        pytest.param({"feeds": [{"id": "bad id!"}]}, "ALERTER_FEEDS", "letters and digits",
                     id="feed-id"),
        pytest.param({"feeds": [{"id": "0abc", "pw": "x"}]}, "ALERTER_FEEDS", "pw",
                     id="feed-unknown-key"),
        pytest.param({"feeds": [{"id": "0abc"}, {"id": "0abc"}]}, "ALERTER_FEEDS", "twice",
                     id="feed-twice"),
        pytest.param({"spot_base_url": "ftp://x"}, "ALERTER_SPOT_BASE_URL", "http", id="url"),
        pytest.param({"feed_spacing": 0, "spot_base_url": LOCAL}, "ALERTER_FEED_SPACING",
                     "more than 0", id="zero"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_variable(
    overrides: dict[str, object], variable: str, phrase: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, **overrides)
    text = str(info.value)
    assert text.startswith(variable), text
    assert phrase in text


def test_floors_do_not_apply_to_a_local_simulator() -> None:
    s = Settings(_env_file=None, spot_base_url=LOCAL, poll_interval=0.5, feed_spacing=0.01)  # type: ignore[call-arg]
    assert (s.poll_interval, s.feed_spacing) == (0.5, 0.01)


def test_bad_feeds_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTER_FEEDS", "[{not json")
    with pytest.raises(ConfigError, match="feeds"):
        load_settings(env_file=None)


def test_mask_id() -> None:
    assert mask_id("0onlX8ABCDEFGHIJKLMNOPQ") == "0onl…OPQ"
    assert mask_id("short") == "…"
