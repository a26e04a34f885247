"""The one bounded YAML reader of every file hatang loads.

Agent and collector configs, org and targets files, and every file added after them
go through ``read_yaml`` (or ``parse_yaml`` for YAML text received another way). A
hostile or broken file gets a ``ConfigError`` naming the file, the line and the limit,
never a traceback and never unbounded memory:

- size: the file is read up to ``max_bytes`` and refused beyond;
- aliases: each node's size with aliases expanded is counted while the file is composed
  (aliases share nodes, so counting is cheap), and a file whose expansion exceeds
  ``max_nodes`` values or ``max_text`` characters of text is refused before anything
  walks it. A "billion laughs" file of 300 bytes is refused at once;
- nesting: deeper than ``max_depth`` levels is refused before the recursive composer
  could overflow the stack (a 1,200-deep flow sequence);
- keys: duplicate keys and keys that are lists or mappings are refused;
- values: scalars that Python cannot build (a 5,000-digit number, the date 2024-13-45)
  are refused with their line, like syntax errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.configerror import ConfigError, show

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "ConfigError", "parse_yaml", "read_yaml"]

MAX_BYTES: Final = 1 << 20
MAX_NODES: Final = 100_000
MAX_DEPTH: Final = 64


@dataclass(frozen=True, slots=True)
class _Limits:
    max_nodes: int
    max_text: int
    max_depth: int


@dataclass(frozen=True, slots=True)
class _Weight:
    """A composed node with its aliases expanded: values, characters, levels."""

    nodes: int
    text: int
    height: int


class _Values:
    """A value Python cannot build is a YAML error with its line, like a syntax error."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, OverflowError) as exc:  # int("1"*5000), date(2024, 13, 45)
            problem = f"cannot read the value {show(node.value)}: {exc}"
            raise ConstructorError(None, None, problem, node.start_mark) from None


class _BoundedLoader(_Values, yaml.SafeLoader):
    """SafeLoader that bounds expansion and depth while composing, and rejects duplicate keys."""

    def __init__(self, stream: str, limits: _Limits) -> None:
        super().__init__(stream)
        self._limits = limits
        self._level = 0
        self._weights: dict[int, _Weight] = {}  # id(node) -> weight; nodes live as long

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        limits = self._limits
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            alias = super().compose_node(parent, index)  # raises on an undefined alias
            # Not weighed yet: its anchor is still open, so the alias lies inside it.
            if alias is None or id(alias) not in self._weights:
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} refers to a list or mapping that contains it "
                    "(recursive structures are not allowed)",
                    event.start_mark,
                )
            return alias
        start = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        self._level += 1
        try:
            if self._level > limits.max_depth:
                raise ComposerError(
                    None, None, f"nested deeper than {limits.max_depth} levels (the limit)", start
                )
            composed = super().compose_node(parent, index)
        finally:
            self._level -= 1
        assert composed is not None  # compose_node is called only with an event pending
        node = composed
        weight = self._weigh(node)
        if weight.nodes > limits.max_nodes:
            raise ComposerError(
                None,
                None,
                f"more than {limits.max_nodes} values with aliases expanded (the limit; "
                "an alias bomb?)",
                start,
            )
        if weight.text > limits.max_text:
            raise ComposerError(
                None,
                None,
                f"more than {limits.max_text} characters of text with aliases expanded (the limit)",
                start,
            )
        if self._level + weight.height > limits.max_depth:
            raise ComposerError(
                None,
                None,
                f"nested deeper than {limits.max_depth} levels with aliases expanded (the limit)",
                start,
            )
        self._weights[id(node)] = weight
        return node

    def _weigh(self, node: Node) -> _Weight:
        if isinstance(node, ScalarNode):
            return _Weight(1, len(node.value), 1)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        nodes, text, height = 1, 0, 0
        for child in children:
            weight = self._weights[id(child)]
            nodes += weight.nodes
            text += weight.text
            height = max(height, weight.height)
        return _Weight(nodes, text, height + 1)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        mark = key_node.start_mark
        try:
            duplicate = key in seen
        except TypeError:
            problem = "a key must be plain text, not a list or mapping"
            raise ConstructorError(None, None, problem, mark) from None
        if duplicate:
            problem = f"duplicate key {show(key)} (each key may appear once per mapping)"
            raise ConstructorError(None, None, problem, mark)
        seen.add(key)
    return loader.construct_mapping(node)


_BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)  # PyYAML built with libyaml


if _CSafeLoader is not None:

    class _FastLoader(_Values, _CSafeLoader):  # type: ignore[misc]
        """libyaml's parser and composer (C) with the same constructors: the org file of a
        city (~450 KB) takes 0.2 s instead of 1.2 s of a collector's start-up."""

    _FastLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _within_limits(text: str, limits: _Limits) -> bool:
    """Whether the file's events (libyaml, iterative) stay within every limit the bounded
    composer enforces, counted the same way: then libyaml's recursive C composer may build
    it. Anything else (an error, a limit crossed, an alias that is undefined or inside its
    own anchor) is left to the bounded loader, which refuses it with its message."""
    stack: list[list[int]] = [[0, 0, 0]]  # per open collection: values, text, height
    anchors: dict[str, tuple[int, int, int]] = {}
    open_anchors: list[str | None] = []
    for event in yaml.parse(text, Loader=_CSafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= limits.max_depth:
                return False
            stack.append([1, 0, 0])
            open_anchors.append(event.anchor)
            continue
        anchor: str | None = None
        if isinstance(event, yaml.ScalarEvent):
            weight = (1, len(event.value), 1)
            anchor = event.anchor
        elif isinstance(event, yaml.CollectionEndEvent):
            values, chars, height = stack.pop()
            weight = (values, chars, height + 1)
            anchor = open_anchors.pop()
        elif isinstance(event, yaml.AliasEvent):
            known = anchors.get(event.anchor or "")
            if known is None:
                return False
            weight = known
        else:  # stream and document events
            continue
        if anchor is not None:
            anchors[anchor] = weight
        top = stack[-1]
        top[0] += weight[0]
        top[1] += weight[1]
        top[2] = max(top[2], weight[2])
        if (
            top[0] > limits.max_nodes
            or top[1] > limits.max_text
            or len(stack) - 1 + top[2] > limits.max_depth
        ):
            return False
    return True


def _fast_data(text: str, limits: _Limits) -> tuple[bool, Any]:
    """(True, the data) when libyaml reads the file within the limits; (False, None) when
    the bounded loader must read it (it alone words the errors users see)."""
    if _CSafeLoader is None:
        return False, None
    try:
        if not _within_limits(text, limits):
            return False, None
        loader = _FastLoader(text)
        try:
            return True, loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError, TypeError, RecursionError):
        return False, None


def parse_yaml(
    text: str,
    *,
    name: str,
    empty_hint: str = "expected at least site:",
    max_nodes: int = MAX_NODES,
    max_text: int | None = None,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse YAML text (bounded, unique keys); raise ConfigError naming ``name`` and the line.

    ``max_text`` (characters of text with aliases expanded) defaults to four times the
    larger of the text's length and ``MAX_BYTES``: aliases may repeat text, not multiply it.
    """
    text_limit = max_text if max_text is not None else 4 * max(len(text), MAX_BYTES)
    limits = _Limits(max_nodes, text_limit, max_depth)
    done, data = _fast_data(text, limits)
    if done:
        if data is None:
            raise ConfigError(name, "", f"file is empty ({empty_hint})")
        return data
    loader = _BoundedLoader(text, limits)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or str(exc)
        start = exc.context_mark
        if exc.context and start and mark and start.line != mark.line:
            problem += f" ({exc.context} at line {start.line + 1}, column {start.column + 1})"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        raise ConfigError(name, "", f"{where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, "", f"invalid YAML: {exc}") from None
    except RecursionError:  # a safety net: max_depth keeps the composer far from the limit
        raise ConfigError(name, "", f"nested too deeply (more than {max_depth} levels)") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(name, "", f"file is empty ({empty_hint})")
    return data


def read_yaml(
    path: str | Path,
    *,
    empty_hint: str = "expected at least site:",
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Read a YAML file (bounded, UTF-8, unique keys); raise ConfigError with line and column.

    The one reader of every hatang YAML file; errors name the file as it was given.
    """
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(name, "", f"file is larger than {_size(max_bytes)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(
        text,
        name=name,
        empty_hint=empty_hint,
        max_nodes=max_nodes,
        max_text=4 * max_bytes,
        max_depth=max_depth,
    )


def _size(count: int) -> str:
    if count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000} MB"
    return f"{count} bytes"
