"""Read rule files into a checked `RuleSet`, reporting every problem as `file:line: message`.

`yamlfile` reads the files (the only I/O) into values and YAML nodes, which know their
lines (`nodes`); this module checks each document's shape and each rule against the schema
(pydantic, whose errors `explain` puts in an admin's words), then the rules across each
other: unique names, `resolves` that name a rule, tags some Apprise URL carries, a critical
rule that notifies someone. What is odd but not wrong (a type SPOT is not known to send)
becomes a warning. ConfigError is the only exception bad input raises.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from alerter.errors import ConfigError, Problem
from alerter.models import KNOWN_TYPES, Severity
from alerter.rules.explain import MAX_RULE_FAULTS, explain
from alerter.rules.nodes import (
    at_path,
    child_of,
    describe,
    format_path,
    key_of,
    key_text,
    line_of,
    locate,
    scalar_value,
)
from alerter.rules.schema import MIN_INTERVAL, Rule, RuleSet
from alerter.rules.yamlfile import Report, read_document, rule_files

__all__ = ["load_rules"]

_TOP_KEYS = ("rules",)


@dataclass(frozen=True)
class _Entry:
    """One rule as written: where it is and what it became."""

    source: str
    order: int  # the file's position among the files read
    index: int
    node: Node
    label: str
    rule: Rule | None  # None when it did not validate


class _Problems:
    """Problems in reading order: by file, then by line."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int, int, Problem]] = []

    def add(self, order: int, source: str, line: int | None, message: str) -> None:
        self._items.append((order, line or 0, len(self._items), Problem(source, line, message)))

    def __bool__(self) -> bool:
        return bool(self._items)

    def sorted(self) -> list[Problem]:
        return [p for *_, p in sorted(self._items, key=lambda item: item[:3])]


def load_rules(
    path: Path, known_tags: Collection[str] | None = None, *, min_interval: float = 0.0
) -> RuleSet:
    """Load a rule file or a folder of them; ConfigError lists every problem found.

    `min_interval` is the poll interval: `repeat`, `updates`, each `escalate` step's
    `after` and `silent_for` (and its `at_least`) may not be shorter, nor ever below 1 s.
    What is odd but not wrong (a type SPOT is not known to send) comes back in the
    RuleSet's `warnings`. ConfigError is the only exception bad input raises.
    """
    problems = _Problems()
    warnings = _Problems()
    entries: list[_Entry] = []
    for order, file in rule_files(path, problems):
        try:
            entries.extend(_load_file(file, order, problems, min_interval))
        except Exception as exc:  # a safety net: never a traceback, whatever the file holds
            text = f"{type(exc).__name__}: {exc}"
            text = text if len(text) <= 200 else text[:197] + "..."
            problems.add(order, str(file), None, f"cannot be read as rules ({text})")
    _check_across(entries, known_tags, problems, warnings)
    if problems:
        raise ConfigError(problems.sorted())
    rules: list[Rule] = []
    origins: dict[str, str] = {}
    for entry in entries:
        assert entry.rule is not None  # every invalid rule added a problem
        rules.append(entry.rule)
        origins[entry.rule.name] = f"{entry.source}:{line_of(entry.node)}"
    return RuleSet(rules=tuple(rules), origins=origins, warnings=tuple(warnings.sorted()))


def _load_file(file: Path, order: int, problems: _Problems, min_interval: float) -> list[_Entry]:
    source = str(file)

    def report(line: int | None, message: str) -> None:
        problems.add(order, source, line, message)

    document = read_document(file, report)
    if document is None:
        return []
    root, data = document
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        report(
            line_of(root),
            f"expected a mapping with a `rules:` list at the top, got {describe(root)}",
        )
        return []
    for key_node, _ in root.value:
        if key_of(key_node) not in _TOP_KEYS:
            report(
                line_of(key_node),
                f"unknown key {key_text(key_node)!r} (allowed: {', '.join(_TOP_KEYS)})",
            )
    rules_key, rules_node = child_of(root, "rules")
    if rules_key is None or rules_node is None:
        report(line_of(root), "missing key 'rules' (the list of rules)")
        return []
    if not isinstance(rules_node, SequenceNode):
        report(
            line_of(rules_key),
            f"rules: expected a list of rules (each starting `- name: ...`), "
            f"got {describe(rules_node)}",
        )
        return []
    pairs = zip(rules_node.value, data["rules"], strict=True)
    context = {MIN_INTERVAL: min_interval}
    return [
        _load_rule(source, order, index, node=node, data=value, report=report, context=context)
        for index, (node, value) in enumerate(pairs)
    ]


def _load_rule(
    source: str,
    order: int,
    index: int,
    *,
    node: Node,
    data: object,
    report: Report,
    context: dict[str, float],
) -> _Entry:
    name = data.get("name") if isinstance(data, dict) else None
    label = f"rules[{index}] {name!r}" if isinstance(name, str) and name else f"rules[{index}]"
    if not isinstance(node, MappingNode):
        report(
            line_of(node),
            f"{label}: expected a rule (a mapping with name, when, notify, ...), "
            f"got {describe(node)}",
        )
        return _Entry(source, order, index, node, label, None)
    try:
        rule = Rule.model_validate(data, context=context)
    except ValidationError as exc:
        for line, message in explain(exc, node):
            report(line, f"{label}: {message}")
        if exc.error_count() > MAX_RULE_FAULTS:
            report(
                line_of(node),
                f"{label}: {exc.error_count() - MAX_RULE_FAULTS} more faults in this rule "
                f"(only the first {MAX_RULE_FAULTS} are shown)",
            )
        return _Entry(source, order, index, node, label, None)
    except (ValueError, ArithmeticError, RecursionError) as exc:  # a validator's own failure
        report(line_of(node), f"{label}: cannot be checked ({type(exc).__name__}: {exc})")
        return _Entry(source, order, index, node, label, None)
    return _Entry(source, order, index, node, label, rule)


# --- cross-rule checks -----------------------------------------------------------------


def _check_across(
    entries: list[_Entry],
    known_tags: Collection[str] | None,
    problems: _Problems,
    warnings: _Problems,
) -> None:
    def report(entry: _Entry, path: tuple[str | int, ...], message: str) -> None:
        line, _ = locate(entry.node, path)
        problems.add(
            entry.order, entry.source, line, f"{entry.label}: {at_path(path[:1], message)}"
        )

    valid = [e for e in entries if e.rule is not None]
    for entry in valid:
        _check_reaches_someone(entry, problems)
        _warn_unlisted_types(entry, warnings)
    by_name: dict[str, _Entry] = {}
    for entry in valid:
        assert entry.rule is not None
        first = by_name.setdefault(entry.rule.name, entry)
        if first is not entry:
            report(
                entry,
                ("name",),
                f"another rule is already named {entry.rule.name!r} "
                f"({first.source}:{line_of(first.node)}); rule names must be unique",
            )
    # A rule that failed validation still exists for the admin: do not call it missing.
    written = {
        name for e in entries if isinstance(name := scalar_value(child_of(e.node, "name")[1]), str)
    }
    listed = sorted(written)
    for entry in valid:
        assert entry.rule is not None
        for i, target in enumerate(entry.rule.resolves or ()):
            other = by_name.get(target)
            if target == entry.rule.name:
                message = "a rule cannot resolve itself"
            elif target not in written:
                others = [n for n in listed[:11] if n != entry.rule.name][:10]
                more = len(written - {entry.rule.name}) - len(others)
                names = ", ".join(others) + (f" and {more} more" if more else "") or "none"
                message = f"no rule is named {target!r} (rules: {names})"
            elif other is not None and other.rule is not None and other.rule.resolves:
                message = f"{target!r} itself has `resolves`, so it opens no incident to resolve"
            else:
                continue
            report(entry, ("resolves", i), message)
    if known_tags is None:
        return
    known = ", ".join(sorted(known_tags)) or "none"
    for entry in valid:
        assert entry.rule is not None
        places: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = [
            (("notify",), entry.rule.notify)
        ]
        # `escalate` is sorted by `after` in the model; match steps to the YAML by position.
        places.extend(_escalation_tags(entry))
        for prefix, tags in places:
            for i, tag in enumerate(tags):
                if tag not in known_tags:
                    path = (*prefix, i)
                    line, _ = locate(entry.node, path)
                    problems.add(
                        entry.order,
                        entry.source,
                        line,
                        f"{entry.label}: {format_path(prefix)}: tag {tag!r} is not carried "
                        f"by any Apprise URL (known: {known})",
                    )


def _check_reaches_someone(entry: _Entry, problems: _Problems) -> None:
    """A critical incident that notifies nobody would be recorded and never told."""
    rule = entry.rule
    assert rule is not None
    if rule.severity is not Severity.CRITICAL or not rule.opens_incidents:
        return
    if rule.notify or rule.escalate:
        return
    path = ("notify",) if child_of(entry.node, "notify")[0] is not None else ("severity",)
    line, _ = locate(entry.node, path)
    problems.add(
        entry.order,
        entry.source,
        line,
        f"{entry.label}: {at_path(path, 'a critical rule must notify someone')}: list a tag in "
        "`notify` (or add an `escalate` step)",
    )


def _warn_unlisted_types(entry: _Entry, warnings: _Problems) -> None:
    """A type SPOT is not known to send: maybe one it adds later, maybe a mistake."""
    rule = entry.rule
    assert rule is not None
    _, when = child_of(entry.node, "when")
    named = (("type", rule.when.types), ("tracking", rule.when.tracking or ()))
    for key, values in named:
        _, written = child_of(when, key) if when is not None else (None, None)
        as_list = isinstance(written, SequenceNode)
        for i, value in enumerate(values):
            if value in KNOWN_TYPES:
                continue
            path: tuple[str | int, ...] = ("when", key, i) if as_list else ("when", key)
            line, _ = locate(entry.node, path)
            warnings.add(
                entry.order,
                entry.source,
                line,
                f"{entry.label}: {format_path(path)}: {value!r} is not a message type SPOT "
                "is known to send: fine if SPOT adds it, but check the spelling "
                "(and `type: unknown` no longer catches it)",
            )


def _escalation_tags(entry: _Entry) -> list[tuple[tuple[str | int, ...], tuple[str, ...]]]:
    """Each escalation step's tags with the step's path as written (the model sorts them)."""
    _, steps = child_of(entry.node, "escalate")
    out: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = []
    if not isinstance(steps, SequenceNode):
        return out
    for i, step in enumerate(steps.value):
        _, tags = child_of(step, "notify")
        if isinstance(tags, SequenceNode):
            values = tuple(str(scalar_value(t)) for t in tags.value)
        elif tags is not None:
            values = (str(scalar_value(tags)),)
        else:
            values = ()
        out.append((("escalate", i, "notify"), values))
    return out
