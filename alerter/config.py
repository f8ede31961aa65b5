"""What an admin edits besides settings: the Apprise config and the rules, cross-checked.

`alerter check`, `alerter run` and a reload (SIGHUP) all read them here, so they agree
on what is a problem: every problem of every file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alerter.errors import ConfigError, Problem
from alerter.notify import Targets, read_targets
from alerter.rules.loader import load_rules
from alerter.rules.schema import RuleSet
from alerter.settings import Settings


@dataclass(frozen=True, slots=True)
class Config:
    """Rules and targets, loaded and cross-checked."""

    rules: RuleSet
    targets: Targets


@dataclass(frozen=True, slots=True)
class Reading:
    """What could be read of each part, every problem found, and what is only odd.

    `targets` holds what Apprise can use even when some entries are wrong (so `check`
    shows them); `rules` is None when any rule is wrong. `warnings` (a type SPOT is not
    known to send, ...) stop nothing: `check` prints them and still succeeds; `run`
    starts with them (the RuleSet carries them too).
    """

    targets: Targets
    rules: RuleSet | None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def read_config(settings: Settings) -> Reading:
    """Read the Apprise config and the rules (whose tags must exist); collect problems.

    One pass, whatever is wrong: a broken Apprise entry does not hide a rule's unknown tag
    (tags are checked against every tag written in the Apprise config, usable entry or
    not; only when no entry could be read at all are they left unchecked). The rules are
    checked against the poll interval: no `repeat`, `updates`, escalation or silence may
    be shorter than the time the service needs to see anything new.
    """
    apprise = read_targets(settings.apprise_config)
    problems = list(apprise.problems)
    rules: RuleSet | None = None
    try:
        rules = load_rules(
            settings.rules, known_tags=apprise.tags, min_interval=settings.poll_interval
        )
    except ConfigError as exc:
        problems.extend(exc.problems)
    else:
        if not rules.rules:
            problems.append(Problem(str(settings.rules), None, "no rules: nobody would be alerted"))
    warnings = list(rules.warnings) if rules is not None else []
    return Reading(apprise.targets, rules, problems, warnings)


def load_config(settings: Settings) -> Config:
    """The rules and targets; ConfigError lists every fault."""
    reading = read_config(settings)
    if reading.problems:
        raise ConfigError(reading.problems)
    assert reading.rules is not None
    return Config(reading.rules, reading.targets)
