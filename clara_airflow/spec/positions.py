"""Where every piece of a pipeline file is, found only when asked.

Each spec object keeps a small :class:`Where`: the YAML node it was read from and, optionally, a key path
below it (mapping keys and sequence indexes, for example ``("input", 0, "path")``). A position is found by
walking down from that node when a message or a check needs it, so loading a valid file never pays for
positions it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from clara_airflow.spec.source import MappingNode, Node, SequenceNode

__all__ = ["KeyPath", "Pos", "Where"]

Pos = tuple[int, int]
KeyPath = tuple[str | int, ...]


def _pos(node: Node) -> Pos:
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def _entry(node: Node | None, key: str | int) -> tuple[Node, Node]:
    """The (key node, value node) of ``key`` in a mapping, or (item, item) of an index in a sequence."""
    if isinstance(node, MappingNode) and isinstance(key, str):
        for key_node, value in node.value:
            if key_node.value == key:
                return key_node, value
    elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key], node.value[key]
    raise KeyError(key)


@dataclass(frozen=True)
class Where:
    """One spec object's place: the node it was read from, and a key path below it.

    ``node`` is where the object starts; ``at("path")`` where its ``path`` value starts; ``key("models")``
    where the ``models`` key is written. Objects built in code (no node) answer (1, 1).
    """

    anchor: Node | None = None
    path: KeyPath = ()

    def _value(self, keys: KeyPath) -> Node:
        node = self.anchor
        if node is None:
            raise KeyError(keys)
        for key in (*self.path, *keys):
            node = _entry(node, key)[1]
        return node

    @property
    def node(self) -> Pos:
        try:
            return _pos(self._value(()))
        except KeyError:
            return 1, 1

    def at(self, *keys: str | int) -> Pos:
        """The value position of a field; KeyError when the object has no such field."""
        return _pos(self._value(keys))

    def get(self, *keys: str | int, default: Pos | None = None) -> Pos:
        """The value position of a field, else ``default``, else the object's own position."""
        try:
            return self.at(*keys)
        except KeyError:
            return default if default is not None else self.node

    def key(self, *keys: str | int) -> Pos:
        """Where a field's key is written (with no keys: the key this object is the value of)."""
        full = (*self.path, *keys)
        if not full:
            raise KeyError(full)
        parent = Where(self.anchor, full[:-1])._value(())
        return _pos(_entry(parent, full[-1])[0])

    def has(self, *keys: str | int) -> bool:
        try:
            self._value(keys)
        except KeyError:
            return False
        return True

    def child(self, *keys: str | int) -> Where:
        return Where(self.anchor, (*self.path, *keys))
