"""YAML with 1.2 core semantics, for the config and the managed access file.

PyYAML implements YAML 1.1, where ``on``/``yes`` are booleans, ``1:30`` is 90 and ``017`` is octal. The
original router (and most YAML written today) means YAML 1.2 core, where those stay strings or decimals.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

_CORE_RESOLVERS: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+.0123456789"),
    ),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
]


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_scalar(node)
    if value.startswith(("0o", "0x")):
        return int(value[2:], 8 if value[1] == "o" else 16)
    return int(value, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = loader.construct_scalar(node).lower()
    if value.endswith(".inf"):
        return -math.inf if value.startswith("-") else math.inf
    return math.nan if value == ".nan" else float(value)


# Aliases may add this many nodes to a document in all. Real configs use a few, if any; a "billion laughs"
# (nine levels of nine aliases, a few hundred bytes) would otherwise expand to 10^9 values for every walk
# over the document. The original's YAML library caps aliases too.
MAX_ALIAS_NODES = 10_000


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars, no merge keys, an error on a duplicate key, and aliases capped."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> its node count with aliases expanded, once composed
        self._alias_nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if not self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)
            return node
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        size = self._sizes.get(id(node))
        if size is None:
            raise yaml.composer.ComposerError(None, None, "an alias inside the node it names (a recursive alias)",
                                              mark)
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"the aliases (*name) of this document expand to more than {MAX_ALIAS_NODES} values;"
                " write the values out instead", mark)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Our own resolver table: the global SafeLoader keeps its 1.1 behaviour for everyone else.
_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in _CORE_RESOLVERS:
    _Loader.add_implicit_resolver(_tag, _regexp, _first)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


class Quoted(str):
    """A string that ``yaml_dump`` always writes in double quotes."""


# libyaml's emitter when PyYAML was built with it: the same output, about five times faster (the admin API
# rewrites the managed file on the event loop at every change).
_SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_SafeDumper):  # type: ignore[misc, valid-type]
    """Quotes every string that a YAML 1.1 *or* a 1.2 reader would take for something else."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


for _tag, _regexp, _first in _CORE_RESOLVERS:
    _Dumper.add_implicit_resolver(_tag, _regexp, _first)
_Dumper.add_representer(Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"'))


def yaml_load(text: str) -> Any:
    """One YAML document, YAML 1.2 core. Raises ``yaml.YAMLError`` (with a mark) on bad input."""
    return yaml.load(text, Loader=_Loader)


def yaml_dump(data: Any) -> str:
    """Block-style YAML, keys in insertion order, readable the same way by YAML 1.1 and 1.2 parsers."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def yaml_key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """The 1-based line of each key path in ``text`` (``("models", 2, "sizeGb")`` -> 42); {} if unparsable."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return {}
    if root is None:
        return {}
    lines: dict[tuple[Any, ...], int] = {(): root.start_mark.line + 1}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        # The loader refuses recursive aliases and caps what aliases add, so this ends, and soon.
        if isinstance(node, yaml.MappingNode):
            children = [(k.value, k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            children = [(i, item, item) for i, item in enumerate(node.value)]
        else:
            return
        for key, marked, child in children:
            lines.setdefault(path + (key,), marked.start_mark.line + 1)
            walk(child, path + (key,))

    walk(root, ())
    return lines
