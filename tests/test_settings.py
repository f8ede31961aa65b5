"""Settings: every value validated with a clear message naming the variable, secrets masked."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from dotenv.parser import parse_stream

from alerter.durations import format_duration, parse_duration
from alerter.errors import ConfigError
from alerter.settings import (
    OFFICIAL_BASE_URL,
    Settings,
    known_variables,
    load_settings,
    mask_id,
    read_settings,
    state_dir_problem,
    unknown_variables,
    unquote,
)

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
    with pytest.raises(ConfigError, match=r"^ALERTER_FEEDS: not valid JSON"):
        load_settings(env_file=None)


def test_mask_id() -> None:
    assert mask_id("0onlX8ABCDEFGHIJKLMNOPQ") == "0onl…OPQ"
    assert mask_id("short") == "…"


# -- no phantom configuration: every ALERTER_* name that is no setting is said -------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("environ", "dotenv", "expected"),
    [
        pytest.param({"ALERTER_TIMEZNE": "UTC"}, None,
                     ["ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?"],
                     id="typo-in-environment"),
        pytest.param({"alerter_timezne": "UTC"}, None,
                     ["alerter_timezne: not a setting; did you mean ALERTER_TIMEZONE?"],
                     id="lower-case-is-read-too"),
        pytest.param({"ALERTER_INTERVAL": "150"}, None,
                     ["ALERTER_INTERVAL: not a setting; did you mean ALERTER_POLL_INTERVAL?"],
                     id="part-of-a-name"),
        pytest.param({"ALERTER_FOO": "1"}, None,
                     ["ALERTER_FOO: not a setting (.env.example lists every one)"],
                     id="nothing-close"),
        pytest.param({}, "ALERTER_FEEDS=[]\nALERTER_TIMEZNE=UTC\n",
                     [".env:2: ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?"],
                     id="typo-in-dotenv"),
        pytest.param({}, "# no value\nALERTER_TIMEZONE\n",
                     [".env:2: ALERTER_TIMEZONE: no '=', ignored: write ALERTER_TIMEZONE=VALUE"],
                     id="no-equals-sign"),
        pytest.param({}, "ALERTER_FEEDS='[{\"id\": \"0abc\"}]\nALERTER_TIMEZONE=UTC\n",
                     [".env:1: not NAME=value (a quote left open?): line 1 is ignored"],
                     id="quote-left-open"),
        pytest.param({}, "ALERTER_FEEDS='[1]\nALERTER_TIMEZONE=UTC\nALERTER_ADMIN_TAG='ops'\n",
                     [".env:1: not NAME=value (a quote left open?): lines 1 to 3 are ignored"],
                     id="quote-left-open-swallows-lines"),
        pytest.param({"ALERTER_TIMEZONE": "UTC", "PATH": "/bin", "OTHER_TIMEZNE": "x"},
                     "ALERTER_ADMIN_TAG=ops\nTZ=UTC\n", [], id="all-known"),
    ],
)  # fmt: skip
def test_unknown_variables_are_named_with_a_did_you_mean(
    tmp_path: Path, environ: dict[str, str], dotenv: str | None, expected: list[str]
) -> None:
    env_file = None
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
        env_file = tmp_path / ".env"

    problems = unknown_variables(env_file, environ)

    assert [str(p).removeprefix(f"{tmp_path}/") for p in problems] == expected


def test_unknown_variables_never_show_a_value(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("ALERTER_FEED_PASSWORD=hunter2-secret\n")
    problems = unknown_variables(env, {"ALERTER_STATUS_TOKN": "token-secret-77"})
    assert len(problems) == 2
    assert "secret" not in " ".join(map(str, problems))


def test_every_setting_is_a_known_variable() -> None:
    assert {"ALERTER_FEEDS", "ALERTER_TIMEZONE", "ALERTER_RETENTION"} <= known_variables()
    assert len(known_variables()) == len(Settings.model_fields)


# -- a bad ALERTER_FEEDS says where --------------------------------------------------------

PASSWORD = "pw-do-not-print"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('[{"id": "0abc"} {"id": "0def"}]',
                     ["ALERTER_FEEDS: not valid JSON: Expecting ',' delimiter at line 1 column 17"],
                     id="missing-comma"),
        pytest.param(f'[{{"id": "0abc", "password": "{PASSWORD}",}}]',
                     ["ALERTER_FEEDS: not valid JSON: Expecting property name enclosed in double "
                      "quotes at line 1 column 47"], id="trailing-comma"),
        pytest.param('[\n  {"id": "0abc"},\n  {"id": "0def"\n]',
                     ["ALERTER_FEEDS: not valid JSON: Expecting ',' delimiter at line 4 column 1"],
                     id="second-line"),
        pytest.param("[" * 100_000, ["ALERTER_FEEDS: not valid JSON: nested too deeply"],
                     id="deep"),
        pytest.param(f'[{{"id": "0abc"}}, {{"id": "bad id!", "password": "{PASSWORD}"}}]',
                     ["ALERTER_FEEDS[1].id: a feed id has letters and digits only"],
                     id="bad-id"),
        pytest.param('[{"id": "0abc"}, {"id": "0def", "pw": "x"}, 7]',
                     ["ALERTER_FEEDS[1].pw: unknown key (a feed has id, password and name)",
                      "ALERTER_FEEDS[2]: Input should be a valid dictionary or instance of "
                      "FeedConfig"], id="unknown-key-and-not-a-feed"),
        pytest.param('[{"name": "Club"}]', ["ALERTER_FEEDS[0].id: Field required"],
                     id="no-id"),
        pytest.param('{"id": "0abc"}', ["ALERTER_FEEDS: Input should be a valid list"],
                     id="not-a-list"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("source", ["environment", "dotenv"])
def test_bad_feeds_name_the_variable_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, value: str, expected: list[str]
) -> None:
    env_file = tmp_path / ".env"
    if source == "environment":
        monkeypatch.setenv("ALERTER_FEEDS", value)
    else:
        env_file.write_text(f"ALERTER_FEEDS='{value}'\n")

    with pytest.raises(ConfigError) as info:
        load_settings(env_file=env_file)

    assert [str(p) for p in info.value.problems] == expected
    assert PASSWORD not in str(info.value)


# -- docker run --env-file keeps quotes: both forms mean the same ----------------------------

FEEDS_JSON = '[{"id": "0abc", "name": "Club \\"A\\""}]'  # a name holding quotes
# Inside double quotes, dotenv reads `\\` and `\"` as escapes: written so, it gives FEEDS_JSON.
DOUBLE_QUOTED = FEEDS_JSON.replace("\\", "\\\\").replace('"', '\\"')


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("'[1, 2]'", "[1, 2]"),
        ('"[1, 2]"', "[1, 2]"),
        ("'a \\' b'", "a ' b"),  # dotenv's escapes inside single quotes
        ('"a\\"b\\\\c"', 'a"b\\c'),  # and inside double quotes
        ("'x\"", "'x\""),  # not a matching pair: unchanged
        ("'", "'"),
        ("''", ""),
        ("it's", "it's"),
        ("plain", "plain"),
        ("'a' 'b'", "a' 'b"),  # one pair only
    ],
)
def test_unquote(text: str, plain: str) -> None:
    assert unquote(text) == plain


@pytest.mark.parametrize(
    ("source", "line"),
    [
        pytest.param("environment", FEEDS_JSON, id="env-bare"),
        pytest.param("environment", f"'{FEEDS_JSON}'", id="env-single-quoted-as-docker-passes"),
        pytest.param("environment", f'"{DOUBLE_QUOTED}"', id="env-double-quoted-as-docker-passes"),
        pytest.param("dotenv", f"'{FEEDS_JSON}'", id="dotenv-single-quoted"),
        pytest.param("dotenv", f'"{DOUBLE_QUOTED}"', id="dotenv-double-quoted"),
    ],
)  # fmt: skip
def test_quoted_values_mean_the_same_from_docker_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, line: str
) -> None:
    env_file = tmp_path / ".env"
    quoted_zone = "'Europe/Zurich'"
    if source == "environment":
        monkeypatch.setenv("ALERTER_FEEDS", line)
        monkeypatch.setenv("ALERTER_TIMEZONE", quoted_zone)
        monkeypatch.setenv("ALERTER_POLL_INTERVAL", '"5m"')
        monkeypatch.setenv("ALERTER_STATUS_TOKEN", "''")  # empty once unquoted: unset
    else:
        env_file.write_text(
            f"ALERTER_FEEDS={line}\nALERTER_TIMEZONE={quoted_zone}\n"
            "ALERTER_POLL_INTERVAL=\"5m\"\nALERTER_STATUS_TOKEN=''\n"
        )

    s = load_settings(env_file=env_file)

    assert [(f.id, f.name) for f in s.feeds] == [("0abc", 'Club "A"')]
    assert (s.timezone, s.poll_interval, s.status_token) == ("Europe/Zurich", 300.0, None)


# -- an unreadable .env is one clear problem -----------------------------------------------


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "gone")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda p: p.mkdir(), ".env: cannot read: it is a folder, not a file",
                     id="a-folder"),
        pytest.param(lambda p: p.write_bytes(b"ALERTER_TIMEZONE=UTC\nALERTER_ADMIN_TAG=\xe9t\n"),
                     ".env:2: not UTF-8 text (byte 0xe9): save it as UTF-8", id="latin-1"),
        pytest.param(_dangling, ".env: cannot read: it is a link to a file that does not exist",
                     id="dangling-link"),
        pytest.param(lambda p: (p.write_text("ALERTER_TIMEZONE=UTC\n"), p.chmod(0)),
                     ".env: cannot read: Permission denied", id="no-permission",
                     marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")),
    ],
)  # fmt: skip
def test_an_unreadable_env_file_is_one_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    make(Path(".env"))  # type: ignore[operator]

    for read in (load_settings, read_settings, unknown_variables):
        with pytest.raises(ConfigError) as info:
            read(".env")  # type: ignore[operator]
        assert [str(p) for p in info.value.problems] == [expected]


def test_a_missing_env_file_is_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().timezone == "UTC"
    assert unknown_variables() == []


# -- check goes on past invalid settings -----------------------------------------------------


def test_read_settings_reports_every_invalid_setting_and_goes_on_with_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERTER_FEEDS", '[{"id": "0abc"} {"id": "0def"}]')
    monkeypatch.setenv("ALERTER_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("ALERTER_POLL_INTERVAL", "60")
    monkeypatch.setenv("ALERTER_ADMIN_TAG", "ops")

    settings, problems = read_settings(env_file=None)

    assert [p.source for p in problems] == [
        "ALERTER_FEEDS", "ALERTER_POLL_INTERVAL", "ALERTER_TIMEZONE",
    ]  # fmt: skip
    assert settings is not None
    assert (settings.feeds, settings.poll_interval, settings.timezone) == ([], 150.0, "UTC")
    assert settings.admin_tag == "ops"  # the valid ones are kept


# -- retention -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "retention", "problem"),
    [
        (None, None, None),
        ("", None, None),  # empty means unset: keep everything
        ("90d", 90 * 86400.0, None),
        ("2592000", 2592000.0, None),
        ("0", None, "ALERTER_RETENTION: must be more than 0 seconds (leave it unset to keep "
                    "everything)"),
        ("forever", None, "ALERTER_RETENTION: expected a duration like 90s, 15m or 2h, got "
                          "'forever'"),
    ],
)  # fmt: skip
def test_retention(
    monkeypatch: pytest.MonkeyPatch, value: str | None, retention: float | None, problem: str | None
) -> None:
    if value is not None:
        monkeypatch.setenv("ALERTER_RETENTION", value)
    settings, problems = read_settings(env_file=None)
    assert [str(p) for p in problems] == ([problem] if problem else [])
    if problem is None:
        assert settings is not None
        assert settings.retention == retention


# -- .env.example tells the truth -----------------------------------------------------------------

EXAMPLE = ROOT / ".env.example"


def _example_names() -> list[str]:
    """Every variable .env.example lists, set or commented out (`# ALERTER_X=...`)."""
    text = "\n".join(
        line.removeprefix("# ") for line in EXAMPLE.read_text().splitlines()
        if line.startswith(("ALERTER_", "# ALERTER_"))
    )  # fmt: skip
    return [b.key for b in parse_stream(io.StringIO(text)) if b.key]


def test_env_example_lists_every_setting_built_and_nothing_else() -> None:
    names = _example_names()
    assert len(names) == len(set(names))
    assert set(names) == known_variables()


def test_env_example_as_is_is_the_defaults_and_says_empty_is_unset(tmp_path: Path) -> None:
    assert unknown_variables(EXAMPLE, {}) == []
    assert load_settings(env_file=EXAMPLE) == load_settings(env_file=None)
    text = EXAMPLE.read_text()
    assert "an empty value is a value" not in text
    assert 'An empty value (ALERTER_TIMEZONE=) means "not set"' in text
    env = tmp_path / ".env"
    env.write_text("ALERTER_TIMEZONE=\nALERTER_RETENTION=\n")
    assert (load_settings(env_file=env).timezone, load_settings(env_file=env).retention) == (
        "UTC", None,
    )  # fmt: skip


def test_env_example_feeds_line_is_valid_json_when_uncommented(tmp_path: Path) -> None:
    [line] = [x for x in EXAMPLE.read_text().splitlines() if x.startswith("# ALERTER_FEEDS=")]
    env = tmp_path / ".env"
    env.write_text(line.removeprefix("# ") + "\n")
    assert [f.name for f in load_settings(env_file=env).feeds] == ["Club", "Expedition"]


# -- settings that do nothing yet, and a state folder that can never be -------------------------


@pytest.mark.parametrize(
    ("make", "state", "expected"),
    [
        pytest.param(None, "state", None, id="to-be-created"),
        pytest.param(lambda p: p.mkdir(), "state", None, id="a-folder"),
        pytest.param(lambda p: p.write_text(""), "state",
                     "ALERTER_STATE_DIR: cannot use state: it is not a folder", id="a-file"),
        pytest.param(lambda p: p.write_text(""), "state/sub/db",
                     "ALERTER_STATE_DIR: cannot use state/sub/db: state is not a folder",
                     id="under-a-file"),
    ],
)  # fmt: skip
def test_state_dir_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, state: str, expected: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(Path("state"))  # type: ignore[operator]
    problem = state_dir_problem(Path(state))
    assert (str(problem) if problem else None) == expected
    assert not Path("state/sub").exists()  # nothing created


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("off", "", id="off"),
        pytest.param("OFF", "", id="off-any-case"),
        pytest.param("127.0.0.1:9000", "127.0.0.1:9000", id="v4"),
        pytest.param("[::1]:8787", "[::1]:8787", id="v6"),
    ],
)
def test_http_listen_takes_an_address_or_off(value: str, expected: str) -> None:
    assert load_settings(env_file=None, http_listen=value).http_listen == expected


@pytest.mark.parametrize("value", ["8787", "localhost", "::1:8787", "127.0.0.1:99999"])
def test_http_listen_refuses_what_is_no_address(value: str) -> None:
    with pytest.raises(ConfigError, match="ALERTER_HTTP_LISTEN: expected host:port"):
        load_settings(env_file=None, http_listen=value)
