"""The rule file schema: pure pydantic models, `extra="forbid"`, no I/O."""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from alerter.durations import parse_duration
from alerter.models import KNOWN_TYPES, Severity, Subject

#: What a stale-track rule counts as "tracking" unless it says otherwise.
DEFAULT_TRACKING = ("TRACK", "EXTREME-TRACK", "UNLIMITED-TRACK", "NEWMOVEMENT")
_TAG = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _duration(v: Any) -> float:
    return parse_duration(v)


def _duration_or_off(v: Any) -> float | None:
    # YAML 1.1 reads a bare `off` as False; accept that, "off", "none" and null alike.
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("off", "none")):
        return None
    return parse_duration(v)


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


Duration = Annotated[float, BeforeValidator(_duration)]
OptionalDuration = Annotated[float | None, BeforeValidator(_duration_or_off)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_str_list)]


class Trigger(StrEnum):
    """What makes a rule fire."""

    TYPE = "type"  # a message of listed types (an event)
    UNKNOWN = "unknown"  # a message of a type nobody documents or names (an event)
    BATTERY = "battery"  # a message reporting a low battery (a condition)
    SILENCE = "silence"  # a tracking device not heard for a while (a condition)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SilentFor(_Strict):
    """Silence judged against the device's own rhythm."""

    times_usual_gap: float = Field(gt=0)
    at_least: Duration = 0.0


class When(_Strict):
    """The condition of a rule: one trigger, optionally narrowed to devices and feeds."""

    type: StrList | Literal["unknown"] | None = None
    device: StrList | None = None
    feed: StrList | None = None
    battery: Literal["LOW"] | None = None
    silent_for: Duration | SilentFor | None = None
    tracking: StrList | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _types(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "unknown":
            return "unknown"
        v = _str_list(v)
        if isinstance(v, list):
            if any(isinstance(t, str) and t.strip().lower() == "unknown" for t in v):
                raise ValueError("`unknown` stands alone: write `type: unknown`")
            if not v:
                raise ValueError("list at least one message type")
            return [t.strip().upper() if isinstance(t, str) else t for t in v]
        return v

    @field_validator("battery", mode="before")
    @classmethod
    def _battery(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking(cls, v: Any) -> Any:
        v = _str_list(v)
        return [t.upper() if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _one_trigger(self) -> When:
        given = [k for k in ("type", "battery", "silent_for") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "needs exactly one of `type`, `battery` or `silent_for`"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.tracking is not None and self.silent_for is None:
            raise ValueError("`tracking` only goes with `silent_for`")
        return self

    @property
    def trigger(self) -> Trigger:
        """Which of the triggers this condition uses."""
        if self.silent_for is not None:
            return Trigger.SILENCE
        if self.battery is not None:
            return Trigger.BATTERY
        return Trigger.UNKNOWN if self.type == "unknown" else Trigger.TYPE

    @property
    def types(self) -> tuple[str, ...]:
        """The listed message types (empty for other triggers)."""
        return self.type if isinstance(self.type, tuple) else ()

    @property
    def tracking_types(self) -> tuple[str, ...]:
        """The types after which silence counts."""
        return self.tracking if self.tracking is not None else DEFAULT_TRACKING


class Escalation(_Strict):
    """Widen the circle when an incident stays unacknowledged."""

    after: Duration
    notify: StrList = Field(min_length=1)


class Rule(_Strict):
    """One admin-written rule."""

    name: str
    when: When
    notify: StrList = ()
    severity: Severity = Severity.WARNING
    repeat: OptionalDuration = None
    updates: OptionalDuration = 15 * 60.0
    escalate: tuple[Escalation, ...] = ()
    resolves: StrList | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a rule name has letters, digits, '-' and '_' only")
        return v

    @field_validator("notify")
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tag in v:
            if not _TAG.match(tag):
                raise ValueError(f"{tag!r} is not a tag (letters, digits, '-' and '_')")
        return v

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("escalate")
    @classmethod
    def _in_order(cls, v: tuple[Escalation, ...]) -> tuple[Escalation, ...]:
        return tuple(sorted(v, key=lambda e: e.after))

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if self.resolves is not None:
            if self.when.trigger is not Trigger.TYPE:
                raise ValueError("a rule with `resolves` needs `when: {type: [...]}`")
            extra = [
                k for k in ("repeat", "escalate") if k in self.model_fields_set and getattr(self, k)
            ]
            if extra:
                raise ValueError(
                    f"a rule with `resolves` opens no incident of its own, so "
                    f"`{extra[0]}` would never apply"
                )
        return self

    @property
    def opens_incidents(self) -> bool:
        """Resolver rules close other rules' incidents; every other rule opens its own."""
        return self.resolves is None

    @property
    def kind(self) -> Subject:
        """What this rule's incidents are about."""
        match self.when.trigger:
            case Trigger.SILENCE:
                return Subject.SILENT
            case Trigger.BATTERY:
                return Subject.LOW_BATTERY
            case Trigger.UNKNOWN:
                return Subject.UNKNOWN
        return Subject.HELP if "HELP" in self.when.types else Subject.EVENT

    @property
    def subject(self) -> str:
        """The word alerts of this rule start with."""
        kind = self.kind
        return f"{self.when.types[0]} {kind}" if kind is Subject.EVENT else kind.value

    def matches_device(
        self, device_id: str, device_name: str, feed_id: str, feed_name: str
    ) -> bool:
        """Whether the `device`/`feed` globs (name or id, case-insensitive) admit this device."""
        return _glob_any(self.when.device, (device_id, device_name)) and _glob_any(
            self.when.feed, (feed_id, feed_name)
        )


def _glob_any(patterns: tuple[str, ...] | None, values: tuple[str, str]) -> bool:
    if patterns is None:
        return True
    return any(
        fnmatch.fnmatchcase(value.lower(), pattern.lower())
        for pattern in patterns
        for value in values
    )


class RuleSet(BaseModel):
    """All rules, in file order, checked as a whole."""

    model_config = ConfigDict(frozen=True)

    rules: tuple[Rule, ...] = ()
    origins: dict[str, str] = Field(default_factory=dict)  # rule name -> "file:line"

    @cached_property
    def by_name(self) -> dict[str, Rule]:
        """Rules by name."""
        return {r.name: r for r in self.rules}

    @cached_property
    def named_types(self) -> frozenset[str]:
        """Every message type some rule names."""
        return frozenset(t for r in self.rules for t in (*r.when.types, *(r.when.tracking or ())))

    def is_unknown_type(self, message_type: str) -> bool:
        """A type neither SPOT documents nor any rule names."""
        return message_type not in KNOWN_TYPES and message_type not in self.named_types

    def resolvers_of(self, name: str) -> tuple[Rule, ...]:
        """The rules whose `resolves` names `name`."""
        return tuple(r for r in self.rules if r.resolves and name in r.resolves)
