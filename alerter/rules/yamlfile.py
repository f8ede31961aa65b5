"""Read rule files as YAML, safely, keeping the line of every value: the I/O of rule loading.

`rule_files` says which files a path names (the file, or the *.yml and *.yaml files directly
in a folder; any other rule-like entry is a problem, never skipped in silence);
`read_document` reads one (at most MAX_FILE_BYTES, never blocking on a pipe), composes it
with the SafeLoader into nodes, which know their lines (nesting deeper than MAX_DEPTH is
refused), and constructs it with the SafeConstructor, so values mean exactly what
`yaml.safe_load` would give; duplicate keys, which YAML would silently drop, and scalars
Python cannot hold (a 5000-digit number) are reported, not kept or raised. Every problem
goes to the caller's report with its line; the nodes are kept only to say where a problem
is (`alerter.rules.nodes`).
"""

from __future__ import annotations

import errno
import os
import stat
import typing
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from alerter.rules.nodes import NULL_TAG, at_path, describe, key_of, key_text, line_of

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "FileProblems", "Report", "read_document", "rule_files"]

_SUFFIXES = (".yml", ".yaml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
#: The largest rule file read (bytes): about 1400 rules, read in about a second. A bigger
#: file is a mistake (a log, an export) and would hold the service up at every reload.
MAX_FILE_BYTES = 256 * 1024
#: The deepest nesting read: a rule needs 6 levels; 1000 would exhaust Python's stack.
MAX_DEPTH = 50


class Report(typing.Protocol):
    """Where a file's problems go: the line (None for the whole file) and the message."""

    def __call__(self, line: int | None, message: str) -> None: ...


class FileProblems(typing.Protocol):
    """Where `rule_files` reports: the entry's order among the files (-1: `path` itself)."""

    def add(self, order: int, source: str, line: int | None, message: str) -> None: ...


def rule_files(path: Path, problems: FileProblems) -> list[tuple[int, Path]]:
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


def read_document(file: Path, report: Report) -> tuple[Node, object] | None:
    """The file's YAML node tree and its values, or None after reporting why there are none.

    Duplicate keys are reported, yet the document is returned: PyYAML keeps the last one.
    """
    root = _compose(file, report)
    if root is None:
        return None
    _report_duplicate_keys(root, "", report)
    try:
        data = SafeConstructor().construct_document(root)
    except yaml.MarkedYAMLError as exc:  # e.g. an unhashable key or a `!!python/...` tag
        report(_mark_line(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except (ValueError, OverflowError, RecursionError) as exc:
        # A scalar Python cannot hold: an int over its 4300-digit limit, a 13th month.
        node, error = _unconstructable(root) or (root, exc)
        report(line_of(node), _unconstructable_message(node, error))
        return None
    return root, data


def _read(file: Path, report: Report) -> bytes | None:
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


def _compose(file: Path, report: Report) -> Node | None:
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
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG):
        report(1, "the file is empty: it needs a `rules:` list")
        return None
    return root


def _report_duplicate_keys(node: Node, where: str, report: Report) -> None:
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
                key = key_of(key_node)
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key; construction reports it
                    continue
                if earlier is not key_node:
                    report(
                        line_of(key_node),
                        at_path(
                            [path] if path else [],
                            f"duplicate key {key_text(key_node)!r} (first at line "
                            f"{line_of(earlier)}); YAML would silently keep only the last one",
                        ),
                    )
                child = f"{path}.{key_text(key_node)}" if path else key_text(key_node)
                stack.append((value_node, child))


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
        return f"cannot read {describe(node)} as a {kind}: {exc}"
    return f"cannot read the file's values: {type(exc).__name__}"


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
