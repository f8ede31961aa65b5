"""Settings: the only reader of the environment and `.env` (prefix `ALERTER_`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from alerter.durations import parse_duration
from alerter.errors import ConfigError, Problem

OFFICIAL_BASE_URL = "https://api.findmespot.com/spot-main-web/consumer/rest-api/2.0/public/feed"
#: SPOT's own limits: never closer on its host, whatever the settings say.
OFFICIAL_MIN_INTERVAL = 150.0
OFFICIAL_MIN_SPACING = 2.0

Duration = Annotated[float, BeforeValidator(parse_duration)]


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


def mask_id(feed_id: str) -> str:
    """A feed id shortened so logs name it without publishing it (it grants read access)."""
    return f"{feed_id[:4]}…{feed_id[-3:]}" if len(feed_id) > 10 else "…"


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

    feeds: list[FeedConfig] = Field(default_factory=list)
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


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Settings from the environment, `.env` and `overrides`; ConfigError names each fault."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            name = f"ALERTER_{field.split('.')[0].upper()}" if field else "settings"
            detail = field.partition(".")[2]
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(Problem(name, None, f"{detail + ': ' if detail else ''}{msg}"))
        raise ConfigError(problems) from None
    except SettingsError as exc:
        # pydantic-settings could not decode a value (e.g. ALERTER_FEEDS is not JSON);
        # its message names the field, never the value.
        raise ConfigError([Problem("settings", None, str(exc))]) from None
