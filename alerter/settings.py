"""Settings: the only reader of the environment and `.env` (prefix `ALERTER_`)."""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv.parser import parse_stream
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from alerter.durations import parse_duration
from alerter.errors import ConfigError, Problem

OFFICIAL_BASE_URL = "https://api.findmespot.com/spot-main-web/consumer/rest-api/2.0/public/feed"
#: SPOT's own limits: never closer on its host, whatever the settings say.
OFFICIAL_MIN_INTERVAL = 150.0
OFFICIAL_MIN_SPACING = 2.0

PREFIX = "ALERTER_"

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _feeds_from_json(value: object) -> object:
    """ALERTER_FEEDS as written (a JSON list); its error says where, never what (passwords)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None


class FeedConfig(BaseModel):
    """One SPOT feed to watch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    password: SecretStr | None = None
    name: str | None = None

    @field_validator("id")
    @classmethod
    def _plain_id(cls, v: str) -> str:
        if not v.isalnum():
            raise ValueError("a feed id has letters and digits only")
        return v

    @property
    def display_name(self) -> str:
        """The name admins gave it, else the masked id."""
        return self.name or mask_id(self.id)


#: Read by us, not by pydantic-settings, so that a JSON error says where it is.
Feeds = Annotated[list[FeedConfig], NoDecode, BeforeValidator(_feeds_from_json)]


def mask_id(feed_id: str) -> str:
    """A feed id shortened so logs name it without publishing it (it grants read access)."""
    return f"{feed_id[:4]}…{feed_id[-3:]}" if len(feed_id) > 10 else "…"


def parse_listen(value: str) -> tuple[str, int] | None:
    """`host:port` or `[v6-address]:port` as (host, port); None when empty (off).
    ValueError, in the admin's words, for anything else."""
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            sep = ""  # a bare IPv6 address: its port is ambiguous
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port (127.0.0.1:8787, [::1]:8787) or off, got {value!r}")
    return host, int(port)


def is_official_host(url: str) -> bool:
    """True when `url` points at SPOT's own API host."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "findmespot.com" or host.endswith(".findmespot.com")


class Settings(BaseSettings):
    """Every `ALERTER_*` setting (PRODUCT.md, Settings); `.env.example` documents each."""

    model_config = SettingsConfigDict(
        env_prefix="ALERTER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # `ALERTER_PUBLIC_URL=` in .env means "not set", not an empty URL.
        env_ignore_empty=True,
    )

    feeds: Feeds = Field(default_factory=list)
    spot_base_url: str = OFFICIAL_BASE_URL
    feed_format: Literal["xml", "json"] = "xml"
    poll_interval: Duration = OFFICIAL_MIN_INTERVAL
    feed_spacing: Duration = OFFICIAL_MIN_SPACING
    request_timeout: Duration = 30.0
    blocked_backoff: Duration = 6 * 3600.0
    rules: Path = Path("rules")
    apprise_config: Path = Path("apprise.yml")
    state_dir: Path = Path("state")
    feed_failing_after: Duration = 15 * 60.0
    admin_tag: str = "admin"
    heartbeat_url: SecretStr | None = None
    http_listen: str = "127.0.0.1:8787"
    public_url: str | None = None
    timezone: str = "UTC"
    first_start_lookback: Duration = 6 * 3600.0
    secret_key: SecretStr | None = None
    status_token: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: How long stored messages are kept (`alerter.retention`); None: for ever.
    retention: Duration | None = None
    log_format: Literal["text", "json"] = "text"

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        text = v.strip()
        if text.lower() == "off":
            return ""  # no web server
        if text:
            parse_listen(text)  # a wrong address is refused here, by `check` too
        return text

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Zurich)"
            ) from None
        return v

    @field_validator("spot_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname:
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @field_validator(
        "poll_interval",
        "feed_spacing",
        "request_timeout",
        "blocked_backoff",
        "feed_failing_after",
    )
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0 seconds")
        return v

    @field_validator("poll_interval", "feed_spacing")
    @classmethod
    def _spot_limits(cls, v: float, info: ValidationInfo) -> float:
        floor = (
            OFFICIAL_MIN_INTERVAL if info.field_name == "poll_interval" else OFFICIAL_MIN_SPACING
        )
        if is_official_host(info.data.get("spot_base_url", OFFICIAL_BASE_URL)) and v < floor:
            what = "per feed" if info.field_name == "poll_interval" else "between requests"
            raise ValueError(
                f"{v:g}s is below SPOT's limit of {floor:g}s {what}; polling faster gets "
                "the feed blocked"
            )
        return v

    @field_validator("retention")
    @classmethod
    def _positive_or_unset(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be more than 0 seconds (leave it unset to keep everything)")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("feeds")
    @classmethod
    def _unique_feeds(cls, v: list[FeedConfig]) -> list[FeedConfig]:
        ids = [f.id for f in v]
        if len(set(ids)) != len(ids):
            raise ValueError("a feed id is listed twice")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment without the quotes `docker run --env-file` leaves on values."""
        return init_settings, _UnquotedEnv(settings_cls), dotenv_settings, file_secret_settings

    @property
    def zone(self) -> ZoneInfo:
        """The admins' time zone."""
        return ZoneInfo(self.timezone)

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.state_dir / "alerter.db"

    def feed_names(self, spot_names: Mapping[str, str | None]) -> dict[str, str]:
        """Every feed's display name (alerts and `status` alike): the admin's name, else
        the one SPOT gives it, else the masked id. `spot_names`: feed id -> SPOT's name."""
        names = {fid: name or mask_id(fid) for fid, name in spot_names.items()}
        names.update({f.id: f.name or names.get(f.id) or mask_id(f.id) for f in self.feeds})
        return names


# -- the environment as `docker run --env-file` passes it -------------------------------

#: What python-dotenv replaces inside quotes (double: these; single: only \\ and \').
_ESCAPES = {
    "\\\\": "\\", "\\'": "'", '\\"': '"', "\\a": "\a", "\\b": "\b", "\\f": "\f",
    "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\v": "\v",
}  # fmt: skip
_QUOTE_ESCAPES = {'"': re.compile(r"\\[\\'\"abfnrtv]"), "'": re.compile(r"\\[\\']")}


def unquote(value: str) -> str:
    """`value` without one pair of matching surrounding quotes, read as python-dotenv reads
    a quoted value in `.env`; any other value unchanged.

    `docker run --env-file .env` keeps quotes literally: `ALERTER_FEEDS='[...]'` reaches the
    environment with its quotes. Unwrapped here, one `.env` means the same to both readers.
    """
    text = value.strip()
    if len(text) < 2 or text[0] != text[-1] or text[0] not in _QUOTE_ESCAPES:
        return value
    return _QUOTE_ESCAPES[text[0]].sub(lambda m: _ESCAPES[m.group(0)], text[1:-1])


class _UnquotedEnv(EnvSettingsSource):
    """The environment, each `ALERTER_*` value with one pair of surrounding quotes removed."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        out: dict[str, str | None] = {}
        for key, value in super()._load_env_vars().items():
            plain = (
                unquote(value) if value is not None and key.upper().startswith(PREFIX) else value
            )
            if not (self.env_ignore_empty and plain == ""):  # `X=''` is unset, like `X=`
                out[key] = plain
        return out


# -- reading, with every problem named ---------------------------------------------------


def _env_text(env_file: str | Path | None) -> str | None:
    """The text of `.env`; None when there is none. ConfigError, one problem, when it exists
    but cannot be read: a folder, no permission, not UTF-8 (it would be skipped or crash)."""
    if env_file is None:
        return None
    path = Path(env_file).expanduser()
    source = str(env_file)

    def fault(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([Problem(source, line, message)])

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise fault("cannot read: it is a folder, not a file")
        if not stat.S_ISREG(mode):
            return None  # a pipe is read once, by pydantic-settings
        data = path.read_bytes()
    except FileNotFoundError:
        if path.is_symlink():
            raise fault("cannot read: it is a link to a file that does not exist") from None
        return None
    except OSError as exc:
        raise fault(f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise fault(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save it as UTF-8", line
        ) from None


def _problem(err: ErrorDetails) -> Problem:
    """A validation error as `ALERTER_FEEDS[1].id: message`."""
    loc = err["loc"]
    name = f"{PREFIX}{str(loc[0]).upper()}" if loc else "settings"
    for part in loc[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and loc[:1] == ("feeds",):
        message = "unknown key (a feed has id, password and name)"
    return Problem(name, None, message)


def read_settings(
    env_file: str | Path | None = ".env", **overrides: Any
) -> tuple[Settings | None, list[Problem]]:
    """Settings and every problem in them, for `check` to go on with the other files.

    Each invalid setting is reported and then taken at its default, so the Apprise config
    and the rules can still be checked; None when even that fails. ConfigError (one
    problem) when `.env` exists but cannot be read.
    """
    _env_text(env_file)
    problems: list[Problem] = []
    defaults: dict[str, Any] = {}
    for _ in range(3):
        try:
            return Settings(_env_file=env_file, **{**overrides, **defaults}), problems  # type: ignore[call-arg]
        except ValidationError as exc:
            errors = exc.errors()
            found = _without_union_noise([_problem(err) for err in errors], errors)
            fields = {str(err["loc"][0]) for err in errors if err["loc"]}
        except SettingsError as exc:
            # A value pydantic-settings itself could not decode; its text names the field.
            fields = set(re.findall(r'field "(\w+)"', str(exc)))
            found = [
                Problem(f"{PREFIX}{f.upper()}", None, "cannot be read") for f in sorted(fields)
            ] or [Problem("settings", None, str(exc))]
        problems = problems or found  # later rounds only show what the defaults brought
        fields = (fields & Settings.model_fields.keys()) - defaults.keys()
        if not fields:
            break
        for name in fields:
            defaults[name] = Settings.model_fields[name].get_default(call_default_factory=True)
    return None, problems


def _without_union_noise(problems: list[Problem], errors: list[ErrorDetails]) -> list[Problem]:
    """An optional setting's bad value fails both `None` and the value: say the value's fault."""
    return [
        p for p, err in zip(problems, errors, strict=True) if err["type"] != "none_required"
    ] or problems


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Settings from the environment, `.env` and `overrides`; ConfigError names each fault."""
    settings, problems = read_settings(env_file, **overrides)
    if settings is None or problems:
        raise ConfigError(problems)
    return settings


def known_variables() -> frozenset[str]:
    """Every setting's variable name, `ALERTER_FEEDS` ..."""
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields)


def _not_a_setting(name: str, known: frozenset[str]) -> str:
    by_suffix = {k.removeprefix(PREFIX): k for k in known}
    close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), sorted(by_suffix), n=1)
    if close:
        return f"not a setting; did you mean {by_suffix[close[0]]}?"
    return "not a setting (.env.example lists every one)"


def unknown_variables(
    env_file: str | Path | None = ".env", environ: Mapping[str, str] | None = None
) -> list[Problem]:
    """Configuration that would be silently ignored: every `ALERTER_*` variable that is not
    a setting (a typo), in the environment and in `.env`, with a did-you-mean; and every
    `.env` line the reader skips (no `=`, a quote left open).

    `ALERTER_TIMEZNE: not a setting; did you mean ALERTER_TIMEZONE?` (environment),
    `.env:3: ALERTER_TIMEZNE: ...` (the file). ConfigError when `.env` cannot be read.
    Names only: a value is never part of a problem.
    """
    known = known_variables()
    env = os.environ if environ is None else environ
    problems = [
        Problem(key, None, _not_a_setting(key, known))
        for key in sorted(env)
        if key.upper().startswith(PREFIX) and key.upper() not in known
    ]
    text = _env_text(env_file)
    if text is None:
        return problems
    source = str(env_file)
    for binding in parse_stream(io.StringIO(text)):
        key, line = binding.key, binding.original.line
        if binding.error:
            last = line + binding.original.string.rstrip("\r\n").count("\n")
            lines = f"line {line} is" if last == line else f"lines {line} to {last} are"
            problems.append(
                Problem(source, line, f"not NAME=value (a quote left open?): {lines} ignored")
            )
        elif key is None or not key.upper().startswith(PREFIX):
            continue
        elif key.upper() not in known:
            problems.append(Problem(source, line, f"{key}: {_not_a_setting(key, known)}"))
        elif binding.value is None:
            problems.append(Problem(source, line, f"{key}: no '=', ignored: write {key}=VALUE"))
    return problems


def state_dir_problem(state_dir: Path) -> Problem | None:
    """Why `state_dir` can never hold the state (it, or a folder above it, is a file),
    found without creating anything. Permissions are not judged: `check` may run as
    another user than the service."""
    path = state_dir.absolute()
    while True:
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            if path.parent == path:
                return None
            path = path.parent
            continue
        except OSError:
            return None  # e.g. no permission to look: the service's user may have it
        if stat.S_ISDIR(mode):
            return None
        shown = path if state_dir.is_absolute() else path.relative_to(Path.cwd().absolute())
        what = "it is" if path == state_dir.absolute() else f"{shown} is"
        return Problem(f"{PREFIX}STATE_DIR", None, f"cannot use {state_dir}: {what} not a folder")
