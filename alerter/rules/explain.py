"""Put pydantic's complaints about one rule in words an admin understands, each at its line.

`explain` turns a rule's ValidationError into (line, message) pairs: the pydantic location
is followed into the YAML nodes to find the line (what is not in the YAML names a union
branch, and of a union's failed branches only the one that got furthest speaks); unknown
keys list the allowed ones, enums and literals their options, and where pydantic's own
wording ("Input should be a valid tuple") would mean nothing, `_EXPECTED` says what the
value should look like. At most MAX_RULE_FAULTS faults of one rule are explained.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node, ScalarNode

from alerter.rules.nodes import at_path, describe, key_text, locate, locate_key, step_into
from alerter.rules.schema import Rule

__all__ = ["MAX_RULE_FAULTS", "explain"]

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
class _Error:
    """A pydantic error with its location split into YAML keys and union branches."""

    type: str
    path: tuple[str | int, ...]  # keys and indexes as written in the YAML
    branch: tuple[tuple[str | int, ...], str] | None  # (path before the branch, branch tag)
    depth: int  # loc elements after the branch tag
    msg: str
    ctx: dict[str, Any]


def explain(exc: ValidationError, node: Node) -> list[tuple[int, str]]:
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
        child = step_into(current, element)
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
        line, _ = locate(rule, path[:-1])
        return line, at_path(path[:-1], f"missing key {path[-1]!r}")
    if err.type in ("extra_forbidden", "invalid_key"):
        line, key_node = locate_key(rule, path)
        key = key_text(key_node) if key_node is not None else str(path[-1])
        allowed = ", ".join(_model_at(path[:-1]).model_fields)
        return line, at_path(path[:-1], f"unknown key {key!r} (allowed: {allowed})")
    line, value = locate(rule, path)
    got = describe(value) if value is not None else "something else"
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
    return line, at_path(path, text)


def _pydantic_text(err: _Error, got: str) -> str:
    if err.type == "union":
        return f"has the wrong form, got {got}"
    msg = err.msg.split(" [", 1)[0]  # never pydantic's "[type=..., input_value=...]" tail
    if msg.startswith("Input should be "):
        return f"must be {msg.removeprefix('Input should be ')}, got {got}"
    return f"{msg[:1].lower()}{msg[1:]}, got {got}"


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
