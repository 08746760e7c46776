"""The one way the harness reads YAML: safe, UTF-8, and no repeated keys.

PyYAML's ``safe_load`` lets the last of two equal keys win without a word, so a second
``budget:`` block in a search space silently replaces the first. ``load`` refuses that and
names both lines; ``read_text`` refuses a file that is not UTF-8 (a leading BOM is dropped)
with one line naming the file instead of a ``UnicodeDecodeError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from irstdlab.harness.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"
YAMLError = yaml.YAMLError  # what load() raises, for callers that do not import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key; ``problem_mark`` is the second one, ``context_mark`` the first."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated inside one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # `<<:` merges may be overridden on purpose; complex keys fail later anyway
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue
            if first is not None:
                raise DuplicateKeyError(
                    None, None,
                    f"key {key!r} appears twice (lines {first.start_mark.line + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)



MAX_VALUES = 100_000  # scalars + collections after alias expansion; real configs hold a few hundred


class AliasBombError(yaml.composer.ComposerError):
    """Aliases (``*name``) that expand to more values than any config holds ("billion laughs")."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values ``node`` stands for once every alias is written out (memoised: aliases share nodes)."""
    if id(node) in sizes:
        if sizes[id(node)] < 0:  # reached again while still inside it: no config value contains itself
            raise AliasBombError(None, None, "an alias (*name) refers to a collection that contains it",
                                 node.start_mark)
        return sizes[id(node)]
    sizes[id(node)] = -1
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(v, sizes) for v in node.value)
    else:
        total = 1
    sizes[id(node)] = total = min(total, MAX_VALUES + 1)
    return total


def load(text: str) -> Any:
    """``yaml.safe_load`` that raises a ``yaml.YAMLError`` on a repeated key (:class:`DuplicateKeyError`)
    or on aliases that expand beyond ``MAX_VALUES`` values (:class:`AliasBombError`)."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_VALUES:
            raise AliasBombError(None, None, f"its aliases (*name) expand to more than {MAX_VALUES} values; "
                                             f"write the values out", node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` without a leading BOM; one ``ConfigError`` if it is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read this {what} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: this {what} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                          f"save it as UTF-8") from None


__all__ = ["AliasBombError", "DuplicateKeyError", "YAMLError", "UniqueKeyLoader", "load", "read_text"]
