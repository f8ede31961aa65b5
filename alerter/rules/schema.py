"""The rule file schema: pure pydantic models, `extra="forbid"`, no I/O."""

from __future__ import annotations

import difflib
import fnmatch
import re
import unicodedata
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alerter.durations import parse_duration
from alerter.errors import Problem
from alerter.models import KNOWN_TYPES, Severity, Subject

#: What a stale-track rule counts as "tracking" unless it says otherwise.
DEFAULT_TRACKING = ("TRACK", "EXTREME-TRACK", "UNLIMITED-TRACK", "NEWMOVEMENT")
_TAG = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


#: The validation context key for the shortest interval a rule may use (the poll interval):
#: `Rule.model_validate(data, context={MIN_INTERVAL: seconds})`. Without it, nothing is
#: checked against a minimum (engine tests build rules directly); 0 means the 1 s floor.
MIN_INTERVAL = "min_interval"
#: The minimum when no poll interval is known: a duration is never 0.
FLOOR = 1.0
#: How alike a misspelt type and a SPOT type are (difflib's ratio) to be called a typo.
#: At 0.75 `HLEP` (0.75) and `HELP-CANCLE` (0.91) are caught; names like `CANCEL` (0.71),
#: `START` (0.73) or `ULTRA-TRACK` (0.69) are left to the loader's warning instead.
TYPO_CUTOFF = 0.75

# Why a duration below the poll interval cannot work, by field.
_TOO_SOON = {
    "repeat": "it would remind faster than the service can see anything",
    "updates": "it would send updates faster than the service can see anything",
    "after": "it would escalate before the service can see a cancel; to tell these tags "
    "at once, add them to `notify`",
    "silent_for": "a device would count as silent before the service has polled it again",
    "at_least": "a device would count as silent before the service has polled it again",
}
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _got(v: Any) -> str:
    """A value for a message, short: a 400-digit number is not repeated in full."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**30:
        return f"a number with {len(str(abs(v)))} digits"
    text = repr(v)
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"


def _seconds(v: Any) -> float:
    try:
        return parse_duration(v)
    except (ValueError, OverflowError) as exc:  # OverflowError: an int too large for a float
        if isinstance(exc, ValueError) and len(repr(v)) <= 40:
            raise
        raise ValueError(f"expected a duration like 90s, 15m or 2h, got {_got(v)}") from None


def _interval(v: Any, info: ValidationInfo) -> float:
    """A duration, at least the poll interval when the context gives one."""
    seconds = _seconds(v)
    context = info.context if isinstance(info.context, dict) else {}
    if MIN_INTERVAL not in context:
        return seconds
    given = float(context[MIN_INTERVAL])
    minimum = given if given > 0 else FLOOR
    if seconds >= minimum:
        return seconds
    written = str(v).strip()
    if _BARE_NUMBER.fullmatch(written):
        written += "s"
    floor = f"the poll interval ({minimum:g}s)" if given > 0 else f"the minimum ({minimum:g}s)"
    why = _TOO_SOON.get(info.field_name or "", "the service cannot see anything sooner")
    raise ValueError(f"{written} is below {floor}: {why}")


def _interval_or_off(v: Any, info: ValidationInfo) -> float | None:
    # YAML 1.1 reads a bare `off` as False; accept that, "off", "none" and null alike.
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("off", "none")):
        return None
    return _interval(v, info)


def type_error(message_type: str) -> str | None:
    """Why `message_type` must be a mistake (empty, invisible characters, a typo), or None.

    A type SPOT is not known to send but that is no near miss is no error: SPOT may add
    it later (the loader warns about it instead).
    """
    if message_type in KNOWN_TYPES:
        return None
    if not message_type:
        return "a message type cannot be empty"
    odd = [c for c in message_type if c.isspace() or not c.isprintable()]
    if odd:
        cleaned = "".join(c for c in message_type if c not in odd)
        guess = cleaned if cleaned in KNOWN_TYPES else _near_miss(cleaned)
        return f"{message_type!r} contains {_character(odd[0])}, which no message type has" + (
            f"; did you mean {guess}?" if guess else ""
        )
    guess = _near_miss(message_type)
    if guess is not None:
        return f"{message_type!r} is not a SPOT message type; did you mean {guess}?"
    return None


def _near_miss(message_type: str) -> str | None:
    close = difflib.get_close_matches(message_type, sorted(KNOWN_TYPES), n=1, cutoff=TYPO_CUTOFF)
    return close[0] if close else None


def _character(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X} ({name or 'a control character'})"


def _spot_type(v: str) -> str:
    problem = type_error(v)
    if problem is not None:
        raise ValueError(problem)
    return v


def _type_name(v: Any) -> Any:
    # Plain spaces around a type are trimmed; any other blank or invisible character stays
    # for `type_error` to name.
    return v.strip(" ").upper() if isinstance(v, str) else v


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


#: A duration of at least the poll interval (see MIN_INTERVAL); `off` where optional.
Interval = Annotated[float, BeforeValidator(_interval)]
OptionalInterval = Annotated[float | None, BeforeValidator(_interval_or_off)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_str_list)]
#: Message types: each one a SPOT type or at least no typo of one (see `type_error`).
TypeList = Annotated[
    tuple[Annotated[str, AfterValidator(_spot_type)], ...], BeforeValidator(_str_list)
]


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

    times_usual_gap: float = Field(gt=0, allow_inf_nan=False)
    at_least: Interval = 0.0


class When(_Strict):
    """The condition of a rule: one trigger, optionally narrowed to devices and feeds."""

    type: TypeList | Literal["unknown"] | None = None
    device: StrList | None = None
    feed: StrList | None = None
    battery: Literal["LOW"] | None = None
    silent_for: Interval | SilentFor | None = None
    tracking: TypeList | None = None

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
            return [_type_name(t) for t in v]
        return v

    @field_validator("battery", mode="before")
    @classmethod
    def _battery(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking(cls, v: Any) -> Any:
        v = _str_list(v)
        if isinstance(v, list) and not v:
            raise ValueError("list at least one message type: with none, no device is tracking")
        return [_type_name(t) for t in v] if isinstance(v, list) else v

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

    after: Interval
    notify: StrList = Field(min_length=1)


class Rule(_Strict):
    """One admin-written rule."""

    name: str
    when: When
    notify: StrList = ()
    severity: Severity = Severity.WARNING
    repeat: OptionalInterval = None
    updates: OptionalInterval = 15 * 60.0
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
    #: What the loader found odd but not wrong (a type SPOT is not known to send), in
    #: file and line order; `alerter check` prints them, the service may log them.
    warnings: tuple[Problem, ...] = ()

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
