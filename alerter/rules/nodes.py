"""Find a value in a YAML node tree and say it as the admin wrote it; no I/O.

Nodes know their lines, which the loader's problems quote: `locate` follows a key path
(keys and list indexes, as pydantic and the cross-rule checks name them) to the line of its
deepest key and the value node there, `child_of` gives the entry of a mapping that PyYAML
keeps (the last), `scalar_value` the value `yaml.safe_load` would give, `describe` a value
as written (`'10 minutes'`, `90`, `off`, `a list`), `line_of` a node's line, and `at_path`
puts a key path before a message (`when.type[0]: ...`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "NULL_TAG",
    "at_path",
    "child_of",
    "describe",
    "format_path",
    "key_of",
    "key_text",
    "line_of",
    "locate",
    "locate_key",
    "scalar_value",
    "step_into",
]

NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"


def child_of(node: Node, key: str) -> tuple[Node | None, Node | None]:
    """The last (key node, value node) pair for `key`, as PyYAML would keep it."""
    found: tuple[Node | None, Node | None] = (None, None)
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if key_of(key_node) == key:
                found = (key_node, value_node)
    return found


def step_into(node: Node | None, element: str | int) -> Node | None:
    """The value under a key (the last, as PyYAML keeps it) or at a list index; else None."""
    if isinstance(node, MappingNode):
        for key_node, value_node in reversed(node.value):
            if key_of(key_node) == element:
                return typing.cast(Node, value_node)
    if (
        isinstance(node, SequenceNode)
        and isinstance(element, int)
        and 0 <= element < len(node.value)
    ):
        return typing.cast(Node, node.value[element])
    return None


def locate(node: Node, path: Sequence[str | int]) -> tuple[int, Node | None]:
    """The line of the deepest key (or list item) of `path` in the YAML, and its value node."""
    line = line_of(node)
    current: Node | None = node
    for element in path:
        if isinstance(current, MappingNode):
            for key_node, value_node in reversed(current.value):
                if key_of(key_node) == element:
                    line, current = line_of(key_node), value_node
                    break
            else:
                return line, None
        else:
            child = step_into(current, element)
            if child is None:
                return line, None
            line, current = line_of(child), child
    return line, current


def locate_key(node: Node, path: Sequence[str | int]) -> tuple[int, Node | None]:
    """The line of the key `path[-1]` in the mapping at `path[:-1]`, and the key node."""
    line, parent = locate(node, path[:-1])
    if isinstance(parent, MappingNode):
        for key_node, _ in parent.value:
            if key_of(key_node) == path[-1]:
                return line_of(key_node), key_node
    return line, None


def scalar_value(node: Node | None) -> object:
    """The value YAML gives a scalar node (`off` is False, `90` is 90); None otherwise."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        # A fresh constructor each time: one kept around would cache every node it saw.
        return SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError):  # a bad tag; construction reports it in context
        return node.value


def key_of(node: Node) -> object:
    """A mapping key as YAML reads it, to compare with a name; a container is its own key."""
    if isinstance(node, ScalarNode) and node.tag == _STR_TAG:
        return node.value  # the common case, without building a constructor
    return scalar_value(node) if isinstance(node, ScalarNode) else id(node)


def key_text(node: Node) -> str:
    """A mapping key as written, for a message."""
    return str(node.value) if isinstance(node, ScalarNode) else describe(node)


def describe(node: Node | None) -> str:
    """A value as the admin wrote it, short: `'10 minutes'`, `90`, `off`, `a list`."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "an empty list" if not node.value else "a list"
    if node is None or node.tag == NULL_TAG:
        return "nothing"
    text = str(node.value)
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text) if node.tag == _STR_TAG else text


def line_of(node: Node) -> int:
    """The node's line in its file, from 1."""
    return node.start_mark.line + 1 if node.start_mark is not None else 1


def at_path(path: Sequence[str | int], text: str) -> str:
    """`text` after the key path it is about (`when.type[0]: ...`); alone for an empty path."""
    where = format_path(path)
    return f"{where}: {text}" if where else text


def format_path(path: Iterable[str | int]) -> str:
    """A key path as an admin reads it: `escalate[1].notify`."""
    out = ""
    for element in path:
        out += f"[{element}]" if isinstance(element, int) else (f".{element}" if out else element)
    return out
