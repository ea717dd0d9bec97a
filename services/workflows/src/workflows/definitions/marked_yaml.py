"""YAML parsing that remembers where each mapping, sequence and key started (1-based lines).

The loader names the line of a problem in every error, so a person fixing an uploaded file can find it.
Aliases are refused (no BMAD file uses them and they are the lever of "billion laughs" inputs), and so are
duplicate keys (YAML says they are an error; PyYAML would silently keep the last one).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

__all__ = ["MarkedList", "MarkedMap", "YamlProblem", "line_of", "parse", "plain"]


class YamlProblem(Exception):
    """The text is not YAML we accept; ``line`` is 1-based when known."""

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class MarkedMap(dict[Any, Any]):
    """A dict that knows its own line and the line of each key."""

    line: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}


class MarkedList(list[Any]):
    """A list that knows its own line and the line of each item."""

    line: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []


def line_of(value: Any) -> int | None:
    return getattr(value, "line", None)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise YamlProblem("YAML aliases (*name) are not accepted", event.start_mark.line + 1)
        return Composer.compose_node(self, parent, index)  # type: ignore[no-any-return]


def _construct_map(loader: _Loader, node: MappingNode) -> MarkedMap:
    loader.flatten_mapping(node)
    out = MarkedMap()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise YamlProblem("a mapping key must be a plain value", line) from None
        if key in out:
            raise YamlProblem(f"duplicate key '{key}' (first at line {out.key_lines[key]})", line)
        out[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
        out.key_lines[key] = line
    return out


def _construct_seq(loader: _Loader, node: SequenceNode) -> MarkedList:
    out = MarkedList()
    out.line = node.start_mark.line + 1
    for child in node.value:
        out.append(loader.construct_object(child, deep=True))  # type: ignore[no-untyped-call]
        out.item_lines.append(child.start_mark.line + 1)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)  # type: ignore[arg-type]
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)  # type: ignore[arg-type]


def parse(text: str) -> Any:
    """One YAML document with line marks; ``YamlProblem`` names the line of the first error."""
    try:
        return yaml.load(text, Loader=_Loader)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "not valid YAML"
        raise YamlProblem(f"not valid YAML: {reason}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"not valid YAML: {exc}", None) from None
    except RecursionError:
        raise YamlProblem("the document is nested too deeply", None) from None


def plain(value: Any) -> Any:
    """Marked containers (and YAML dates) → plain JSON-able values, for what is kept as documentation."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
