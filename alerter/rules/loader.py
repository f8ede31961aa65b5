"""Read rule files into a checked `RuleSet`, reporting every problem as `file:line: message`.

The only I/O is reading the files. YAML is composed with the SafeLoader into nodes (which
know their lines) and constructed with the SafeConstructor, so values mean exactly what
`yaml.safe_load` would give; the nodes are kept only to say where a problem is.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import types
import typing
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from alerter.errors import ConfigError, Problem
from alerter.models import KNOWN_TYPES, Severity
from alerter.rules.schema import MIN_INTERVAL, Rule, RuleSet

__all__ = ["load_rules"]

_TOP_KEYS = ("rules",)
_SUFFIXES = (".yml", ".yaml")
_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
#: The largest rule file read (bytes): about 1400 rules, read in about a second. A bigger
#: file is a mistake (a log, an export) and would hold the service up at every reload.
MAX_FILE_BYTES = 256 * 1024
#: The deepest nesting read: a rule needs 6 levels; 1000 would exhaust Python's stack.
MAX_DEPTH = 50
#: The most faults explained in one rule (each one is looked up in the YAML, so 8000
#: unknown keys in one rule would take a minute); the rest are counted.
MAX_RULE_FAULTS = 50

# What a value should look like, by key path (`*` for a list index); used when pydantic's
# own wording ("Input should be a valid tuple") would mean nothing to an admin.
_EXPECTED: dict[tuple[str, ...], str] = {
    ("name",): "a rule name like help (letters, digits, '-' and '_')",
    ("when",): "a mapping like {type: [HELP]}",
    ("when", "type"): "a message type, a list of them like [HELP, HELP-CANCEL], or unknown",
    ("when", "type", "*"): "a message type like HELP",
    ("when", "device"): "a device name or id (globs like 'Anna*' work), or a list of them",
    ("when", "device", "*"): "a device name or id (globs like 'Anna*' work)",
    ("when", "feed"): "a feed name or id (globs work), or a list of them",
    ("when", "feed", "*"): "a feed name or id (globs work)",
    ("when", "silent_for"): "a duration like 45m, or {times_usual_gap: 3, at_least: 30m}",
    ("when", "silent_for", "times_usual_gap"): "a number like 3",
    ("when", "tracking"): "a list of message types like [TRACK, EXTREME-TRACK]",
    ("when", "tracking", "*"): "a message type like TRACK",
    ("notify",): "a list of tags like [rescue]",
    ("notify", "*"): "a tag like rescue",
    ("escalate",): "a list of steps like [{after: 20m, notify: [rescue-backup]}]",
    ("escalate", "*"): "a step like {after: 20m, notify: [rescue-backup]}",
    ("escalate", "*", "notify"): "a list of tags like [rescue-backup]",
    ("escalate", "*", "notify", "*"): "a tag like rescue-backup",
    ("resolves",): "a rule name, or a list of them",
    ("resolves", "*"): "a rule name",
}


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
    for order, file in _rule_files(path, problems):
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
        origins[entry.rule.name] = f"{entry.source}:{_line(entry.node)}"
    return RuleSet(rules=tuple(rules), origins=origins, warnings=tuple(warnings.sorted()))


def _rule_files(path: Path, problems: _Problems) -> list[tuple[int, Path]]:
    """The rule files to read with their order; every other rule-like entry is a problem."""
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        why = _not_a_file(path)
        if why is not None:
            problems.add(-1, str(path), None, why)
            return []
        return [(0, path)]
    try:
        names = sorted(e.name for e in os.scandir(path))
    except OSError as exc:
        problems.add(-1, str(path), None, f"cannot list the folder: {exc.strerror or exc}")
        return []
    # Hidden entries are editors' lock and swap files (`.#help.yml`), not rules.
    entries = [
        path / n for n in names if Path(n).suffix.lower() in _SUFFIXES and not n.startswith(".")
    ]
    if not entries:
        problems.add(-1, str(path), None, "no rule files (*.yml or *.yaml) in this folder")
    files: list[tuple[int, Path]] = []
    for order, entry in enumerate(entries):
        why = _not_a_file(entry)
        if why is None:
            files.append((order, entry))
        else:  # never skipped in silence: its rules would be missing without a word
            problems.add(order, str(entry), None, why)
    return files


def _not_a_file(path: Path) -> str | None:
    """Why `path` is no regular file to read rules from, or None when it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that leads back to itself (a loop); fix or remove it"
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"a broken symbolic link (to {target}, which does not exist); fix or remove it"
        if exc.errno == errno.ENOENT:
            return "no such rule file or folder"
        return f"cannot read it: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return (
            "a folder, not a rule file: rules are read only from the *.yml and *.yaml files "
            "directly in the rules folder; rename or move it"
        )
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device); a rule file is a plain file"
    return None


def _load_file(file: Path, order: int, problems: _Problems, min_interval: float) -> list[_Entry]:
    source = str(file)

    def report(line: int | None, message: str) -> None:
        problems.add(order, source, line, message)

    root = _compose(file, report)
    if root is None:
        return []
    _report_duplicate_keys(root, "", report)
    try:
        data = SafeConstructor().construct_document(root)
    except yaml.MarkedYAMLError as exc:  # e.g. an unhashable key or a `!!python/...` tag
        report(_mark_line(exc), f"invalid YAML: {_yaml_message(exc)}")
        return []
    except (ValueError, OverflowError, RecursionError) as exc:
        # A scalar Python cannot hold: an int over its 4300-digit limit, a 13th month.
        node, error = _unconstructable(root) or (root, exc)
        report(_line(node), _unconstructable_message(node, error))
        return []
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        report(
            _line(root),
            f"expected a mapping with a `rules:` list at the top, got {_describe(root)}",
        )
        return []
    for key_node, _ in root.value:
        if _key_of(key_node) not in _TOP_KEYS:
            report(
                _line(key_node),
                f"unknown key {_key_text(key_node)!r} (allowed: {', '.join(_TOP_KEYS)})",
            )
    rules_key, rules_node = _child(root, "rules")
    if rules_key is None or rules_node is None:
        report(_line(root), "missing key 'rules' (the list of rules)")
        return []
    if not isinstance(rules_node, SequenceNode):
        report(
            _line(rules_key),
            f"rules: expected a list of rules (each starting `- name: ...`), "
            f"got {_describe(rules_node)}",
        )
        return []
    pairs = zip(rules_node.value, data["rules"], strict=True)
    context = {MIN_INTERVAL: min_interval}
    return [
        _load_rule(source, order, index, node=node, data=value, report=report, context=context)
        for index, (node, value) in enumerate(pairs)
    ]


def _read(file: Path, report: _Report) -> bytes | None:
    """The file's bytes, at most MAX_FILE_BYTES; never blocks on a pipe."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        report(None, f"cannot read the file: {exc.strerror or exc}")
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                report(None, "not a regular file (a pipe, socket or device)")
                return None
            raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            report(None, f"cannot read the file: {exc.strerror or exc}")
            return None
    if len(raw) > MAX_FILE_BYTES:
        report(
            None,
            f"larger than {MAX_FILE_BYTES // 1024} KiB, the most a rule file may be "
            "(is it the right file?)",
        )
        return None
    return raw


class _TooDeep(Exception):  # an internal signal: never leaves the loader
    def __init__(self, mark: Mark | None) -> None:
        super().__init__("nested too deeply")
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """The SafeLoader, refusing nesting deeper than MAX_DEPTH (its composer recurses)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                self.check_event()  # makes the node's first event the current one
                event = self.current_event
                raise _TooDeep(event.start_mark if event is not None else self.get_mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(file: Path, report: _Report) -> Node | None:
    """The file's YAML node tree, or None after reporting why there is none."""
    raw = _read(file, report)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report(raw[: exc.start].count(b"\n") + 1, "not UTF-8 text; save the file as UTF-8")
        return None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # already reads: it refuses a NUL or other control character
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        report(_mark_line(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except ReaderError as exc:
        report(text[: exc.position].count("\n") + 1, f"invalid YAML: {exc.reason}")
        return None
    except (_TooDeep, RecursionError) as exc:
        mark = exc.mark if isinstance(exc, _TooDeep) else loader and loader.get_mark()
        report(
            mark.line + 1 if mark is not None else None,
            f"nested more than {MAX_DEPTH} levels deep; a rule needs no more than 6",
        )
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        report(1, "the file is empty: it needs a `rules:` list")
        return None
    return root


class _Report(typing.Protocol):
    def __call__(self, line: int | None, message: str) -> None: ...


def _load_rule(
    source: str,
    order: int,
    index: int,
    *,
    node: Node,
    data: object,
    report: _Report,
    context: dict[str, float],
) -> _Entry:
    name = data.get("name") if isinstance(data, dict) else None
    label = f"rules[{index}] {name!r}" if isinstance(name, str) and name else f"rules[{index}]"
    if not isinstance(node, MappingNode):
        report(
            _line(node),
            f"{label}: expected a rule (a mapping with name, when, notify, ...), "
            f"got {_describe(node)}",
        )
        return _Entry(source, order, index, node, label, None)
    try:
        rule = Rule.model_validate(data, context=context)
    except ValidationError as exc:
        for line, message in _explain(exc, node):
            report(line, f"{label}: {message}")
        if exc.error_count() > MAX_RULE_FAULTS:
            report(
                _line(node),
                f"{label}: {exc.error_count() - MAX_RULE_FAULTS} more faults in this rule "
                f"(only the first {MAX_RULE_FAULTS} are shown)",
            )
        return _Entry(source, order, index, node, label, None)
    except (ValueError, ArithmeticError, RecursionError) as exc:  # a validator's own failure
        report(_line(node), f"{label}: cannot be checked ({type(exc).__name__}: {exc})")
        return _Entry(source, order, index, node, label, None)
    return _Entry(source, order, index, node, label, rule)


# --- pydantic errors -> admin messages -------------------------------------------------


@dataclass(frozen=True)
class _Error:
    """A pydantic error with its location split into YAML keys and union branches."""

    type: str
    path: tuple[str | int, ...]  # keys and indexes as written in the YAML
    branch: tuple[tuple[str | int, ...], str] | None  # (path before the branch, branch tag)
    depth: int  # loc elements after the branch tag
    msg: str
    ctx: dict[str, Any]


def _explain(exc: ValidationError, node: Node) -> list[tuple[int, str]]:
    """One (line, message) per fault in a rule, union branches folded into one verdict."""
    errors: list[_Error] = []
    for detail in exc.errors(include_url=False, include_input=False)[:MAX_RULE_FAULTS]:
        ctx = detail.get("ctx") or {}
        errors.append(_split(detail["loc"], node, detail["type"], detail["msg"], ctx))
    out: list[tuple[int, str]] = []
    seen: set[tuple[int, str]] = set()
    for err in _fold_unions(errors):
        item = _message(err, node)
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _split(
    loc: tuple[str | int, ...], node: Node, type_: str, msg: str, ctx: dict[str, Any]
) -> _Error:
    """Keep the loc elements that exist in the YAML; the others name union branches."""
    path: list[str | int] = []
    branch: tuple[tuple[str | int, ...], str] | None = None
    depth = 0
    current: Node | None = node
    for i, element in enumerate(loc):
        if branch is not None:
            depth += 1
        if isinstance(element, int) and isinstance(current, ScalarNode):
            continue  # one value written alone, which the schema made a list of one
        child = _step(current, element)
        last = i == len(loc) - 1
        if child is not None or (last and type_ == "missing"):
            path.append(element)
            current = child
        elif isinstance(element, str) and branch is None:
            branch = (tuple(path), element)
        else:  # cannot follow it in the YAML: keep it for the message anyway
            path.append(element)
            current = None
    return _Error(type_, tuple(path), branch, depth, msg, ctx)


def _fold_unions(errors: list[_Error]) -> list[_Error]:
    """Of a union's failed branches, keep the one that got furthest into the value."""
    groups: dict[tuple[str | int, ...], list[_Error]] = {}
    for err in errors:
        if err.branch is not None:
            groups.setdefault(err.branch[0], []).append(err)
    out: list[_Error] = []
    for err in errors:
        if err.branch is None:
            out.append(err)
            continue
        group = groups.pop(err.branch[0], None)
        if group is None:  # already folded at its first error
            continue
        deep = [e for e in group if e.depth > 0]
        custom = [e for e in group if e.type == "value_error"]
        out.extend(deep or custom or [_Error("union", err.branch[0], None, 0, "", {})])
    return out


def _message(err: _Error, rule: Node) -> tuple[int, str]:
    path = err.path
    if err.type == "missing":
        line, _ = _locate(rule, path[:-1])
        return line, _at(path[:-1], f"missing key {path[-1]!r}")
    if err.type in ("extra_forbidden", "invalid_key"):
        line, key_node = _locate_key(rule, path)
        key = _key_text(key_node) if key_node is not None else str(path[-1])
        allowed = ", ".join(_model_at(path[:-1]).model_fields)
        return line, _at(path[:-1], f"unknown key {key!r} (allowed: {allowed})")
    line, value = _locate(rule, path)
    got = _describe(value) if value is not None else "something else"
    expected = _EXPECTED.get(tuple(e if isinstance(e, str) else "*" for e in path))
    if err.type in ("value_error", "assertion_error"):
        text = str(err.ctx.get("error") or err.msg.removeprefix("Value error, "))
    elif err.type in ("enum", "literal_error"):
        options = re.findall(r"'([^']*)'", str(err.ctx.get("expected", "")))
        text = (
            f"must be {options[0]}, got {got}"
            if len(options) == 1
            else f"must be one of {', '.join(options)}, got {got}"
        )
    elif err.type == "too_short":
        text = "must not be empty" if err.ctx.get("min_length") == 1 else _pydantic_text(err, got)
    elif err.type == "recursion_loop":
        text = "refers to itself (a recursive YAML alias)"
    elif expected is not None and (err.type == "union" or err.type.endswith("_type")):
        text = f"expected {expected}, got {got}"
    else:
        text = _pydantic_text(err, got)
    return line, _at(path, text)


def _pydantic_text(err: _Error, got: str) -> str:
    if err.type == "union":
        return f"has the wrong form, got {got}"
    msg = err.msg.split(" [", 1)[0]  # never pydantic's "[type=..., input_value=...]" tail
    if msg.startswith("Input should be "):
        return f"must be {msg.removeprefix('Input should be ')}, got {got}"
    return f"{msg[:1].lower()}{msg[1:]}, got {got}"


def _at(path: Sequence[str | int], text: str) -> str:
    where = _format_path(path)
    return f"{where}: {text}" if where else text


def _format_path(path: Iterable[str | int]) -> str:
    out = ""
    for element in path:
        out += f"[{element}]" if isinstance(element, int) else (f".{element}" if out else element)
    return out


def _model_at(path: Sequence[str | int]) -> type[BaseModel]:
    """The schema model that the mapping at `path` (inside a rule) is checked against."""
    model: type[BaseModel] = Rule
    for element in path:
        if isinstance(element, int) or element not in model.model_fields:
            continue
        found = _models_in(model.model_fields[element].annotation)
        if found:
            model = found[0]
    return model


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


# --- cross-rule checks -----------------------------------------------------------------


def _check_across(
    entries: list[_Entry],
    known_tags: Collection[str] | None,
    problems: _Problems,
    warnings: _Problems,
) -> None:
    def report(entry: _Entry, path: tuple[str | int, ...], message: str) -> None:
        line, _ = _locate(entry.node, path)
        problems.add(entry.order, entry.source, line, f"{entry.label}: {_at(path[:1], message)}")

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
                f"({first.source}:{_line(first.node)}); rule names must be unique",
            )
    # A rule that failed validation still exists for the admin: do not call it missing.
    written = {name for e in entries if isinstance(name := _scalar(_child(e.node, "name")[1]), str)}
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
                    line, _ = _locate(entry.node, path)
                    problems.add(
                        entry.order,
                        entry.source,
                        line,
                        f"{entry.label}: {_format_path(prefix)}: tag {tag!r} is not carried "
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
    path = ("notify",) if _child(entry.node, "notify")[0] is not None else ("severity",)
    line, _ = _locate(entry.node, path)
    problems.add(
        entry.order,
        entry.source,
        line,
        f"{entry.label}: {_at(path, 'a critical rule must notify someone')}: list a tag in "
        "`notify` (or add an `escalate` step)",
    )


def _warn_unlisted_types(entry: _Entry, warnings: _Problems) -> None:
    """A type SPOT is not known to send: maybe one it adds later, maybe a mistake."""
    rule = entry.rule
    assert rule is not None
    _, when = _child(entry.node, "when")
    named = (("type", rule.when.types), ("tracking", rule.when.tracking or ()))
    for key, values in named:
        _, written = _child(when, key) if when is not None else (None, None)
        as_list = isinstance(written, SequenceNode)
        for i, value in enumerate(values):
            if value in KNOWN_TYPES:
                continue
            path: tuple[str | int, ...] = ("when", key, i) if as_list else ("when", key)
            line, _ = _locate(entry.node, path)
            warnings.add(
                entry.order,
                entry.source,
                line,
                f"{entry.label}: {_format_path(path)}: {value!r} is not a message type SPOT "
                "is known to send: fine if SPOT adds it, but check the spelling "
                "(and `type: unknown` no longer catches it)",
            )


def _escalation_tags(entry: _Entry) -> list[tuple[tuple[str | int, ...], tuple[str, ...]]]:
    """Each escalation step's tags with the step's path as written (the model sorts them)."""
    _, steps = _child(entry.node, "escalate")
    out: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = []
    if not isinstance(steps, SequenceNode):
        return out
    for i, step in enumerate(steps.value):
        _, tags = _child(step, "notify")
        if isinstance(tags, SequenceNode):
            values = tuple(str(_scalar(t)) for t in tags.value)
        elif tags is not None:
            values = (str(_scalar(tags)),)
        else:
            values = ()
        out.append((("escalate", i, "notify"), values))
    return out


# --- YAML nodes ------------------------------------------------------------------------


def _report_duplicate_keys(node: Node, where: str, report: _Report) -> None:
    """PyYAML keeps the last of two equal keys without a word; tell the admin instead."""
    stack: list[tuple[Node, str]] = [(node, where)]
    visited: set[int] = set()
    while stack:
        current, path = stack.pop()
        if id(current) in visited:  # aliases share nodes, and may even loop
            continue
        visited.add(id(current))
        if isinstance(current, SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(current.value))
        elif isinstance(current, MappingNode):
            first: dict[object, Node] = {}
            for key_node, value_node in current.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = _key_of(key_node)
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key; construction reports it
                    continue
                if earlier is not key_node:
                    report(
                        _line(key_node),
                        _at(
                            [path] if path else [],
                            f"duplicate key {_key_text(key_node)!r} (first at line "
                            f"{_line(earlier)}); YAML would silently keep only the last one",
                        ),
                    )
                child = f"{path}.{_key_text(key_node)}" if path else _key_text(key_node)
                stack.append((value_node, child))


def _child(node: Node, key: str) -> tuple[Node | None, Node | None]:
    """The last (key node, value node) pair for `key`, as PyYAML would keep it."""
    found: tuple[Node | None, Node | None] = (None, None)
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if _key_of(key_node) == key:
                found = (key_node, value_node)
    return found


def _step(node: Node | None, element: str | int) -> Node | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in reversed(node.value):
            if _key_of(key_node) == element:
                return typing.cast(Node, value_node)
    if (
        isinstance(node, SequenceNode)
        and isinstance(element, int)
        and 0 <= element < len(node.value)
    ):
        return typing.cast(Node, node.value[element])
    return None


def _locate(node: Node, path: Sequence[str | int]) -> tuple[int, Node | None]:
    """The line of the deepest key (or list item) of `path` in the YAML, and its value node."""
    line = _line(node)
    current: Node | None = node
    for element in path:
        if isinstance(current, MappingNode):
            for key_node, value_node in reversed(current.value):
                if _key_of(key_node) == element:
                    line, current = _line(key_node), value_node
                    break
            else:
                return line, None
        else:
            child = _step(current, element)
            if child is None:
                return line, None
            line, current = _line(child), child
    return line, current


def _locate_key(node: Node, path: Sequence[str | int]) -> tuple[int, Node | None]:
    """The line of the key `path[-1]` in the mapping at `path[:-1]`, and the key node."""
    line, parent = _locate(node, path[:-1])
    if isinstance(parent, MappingNode):
        for key_node, _ in parent.value:
            if _key_of(key_node) == path[-1]:
                return _line(key_node), key_node
    return line, None


def _unconstructable(root: Node) -> tuple[Node, Exception] | None:
    """The first scalar (in document order) that Python cannot construct, and why."""
    stack: list[Node] = [root]
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, ScalarNode):
            try:
                SafeConstructor().construct_object(node)
            except (ValueError, OverflowError, yaml.YAMLError) as exc:
                return node, exc
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
    return None


def _unconstructable_message(node: Node, exc: BaseException) -> str:
    if isinstance(node, ScalarNode) and node.tag == _INT_TAG:
        digits = sum(c.isdigit() for c in str(node.value))
        return f"a number with {digits} digits is too long to read"
    if isinstance(node, ScalarNode):
        kind = str(node.tag).rsplit(":", 1)[-1]
        return f"cannot read {_describe(node)} as a {kind}: {exc}"
    return f"cannot read the file's values: {type(exc).__name__}"


def _scalar(node: Node | None) -> object:
    """The value YAML gives a scalar node (`off` is False, `90` is 90); None otherwise."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        # A fresh constructor each time: one kept around would cache every node it saw.
        return SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError):  # a bad tag; construction reports it in context
        return node.value


def _key_of(node: Node) -> object:
    if isinstance(node, ScalarNode) and node.tag == _STR_TAG:
        return node.value  # the common case, without building a constructor
    return _scalar(node) if isinstance(node, ScalarNode) else id(node)


def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else _describe(node)


def _describe(node: Node | None) -> str:
    """A value as the admin wrote it, short: `'10 minutes'`, `90`, `off`, `a list`."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "an empty list" if not node.value else "a list"
    if node is None or node.tag == _NULL_TAG:
        return "nothing"
    text = str(node.value)
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text) if node.tag == _STR_TAG else text


def _line(node: Node) -> int:
    return node.start_mark.line + 1 if node.start_mark is not None else 1


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else None


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    text = exc.problem or exc.context or "cannot parse"
    if exc.context and exc.problem:
        text = f"{exc.problem} ({exc.context}"
        if (
            exc.context_mark is not None
            and exc.problem_mark is not None
            and (exc.context_mark.line != exc.problem_mark.line)
        ):
            text += f" started at line {exc.context_mark.line + 1}"
        text += ")"
    if "'\\t'" in text:
        text += "; indent with spaces, not tabs"
    return text
