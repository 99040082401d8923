"""Safe YAML reading that remembers the line of every value.

Only plain YAML is accepted: no tags beyond the standard scalars, no anchors or
aliases (no "billion laughs"), and documents of bounded size and depth (the
composer and everything after it recurse once per level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 64  # nested mappings and lists; a campaign needs fewer than ten
_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}

Path = tuple[str | int, ...]


class SourceError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(slots=True)
class Located:
    """A YAML document as plain data, with the line (1-based) of every value and key."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    key_lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


class _Loader(yaml.SafeLoader):
    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SourceError(event.start_mark.line + 1, "YAML anchors and aliases are not allowed")
        if self.depth >= MAX_DEPTH:
            raise SourceError(event.start_mark.line + 1, f"YAML nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(text: str) -> Located:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise SourceError(1, f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a control character, refused before parsing begins
        line = text.count("\n", 0, exc.position) + 1
        raise SourceError(line, f"YAML cannot hold the character U+{exc.character:04X}") from None
    try:
        root = loader.get_single_node()
        located = Located(data=None)
        located.data = {} if root is None else _build(loader, root, (), located)
        return located
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SourceError(line, f"YAML syntax: {exc.problem or exc.context}") from None
    finally:
        loader.dispose()


def _build(loader: _Loader, node: Node, path: Path, located: Located) -> Any:
    located.lines[path] = node.start_mark.line + 1
    if node.tag not in _STANDARD_TAGS:
        raise SourceError(node.start_mark.line + 1, f"YAML tag {node.tag} is not allowed")
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise SourceError(key_node.start_mark.line + 1, "mapping keys must be plain strings")
            key = key_node.value
            if key in out:
                raise SourceError(key_node.start_mark.line + 1, f"duplicate key `{key}`")
            located.key_lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, (*path, key), located)
        return out
    if isinstance(node, SequenceNode):
        return [_build(loader, item, (*path, i), located) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
