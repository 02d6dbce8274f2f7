"""Where every piece of a pipeline file is: one source map per document, keyed by key path (as dagster's
``SourcePositionTree``), and a small :class:`Where` view of it for each spec object.

A key path is the tuple of mapping keys and sequence indexes from the document's root, for example
``("operators", 2, "input", 0, "path")``. The map holds the (line, column) of every value and of every
mapping key, and the key path of every mapping and sequence node, so a reader that holds a node knows
its place without threading paths through every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clara_airflow.spec.source import MappingNode, Node, SequenceNode

__all__ = ["KeyPath", "Pos", "SourceMap", "Where"]

Pos = tuple[int, int]
KeyPath = tuple[str | int, ...]


class SourceMap:
    """Positions of one document by key path: built in one walk over the node tree."""

    def __init__(self, root: Node | None = None) -> None:
        self.values: dict[KeyPath, Pos] = {}
        self.keys: dict[KeyPath, Pos] = {}
        self.paths: dict[int, KeyPath] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: Node, path: KeyPath) -> None:
        # position() inlined and no recursion into scalars: every node of every file passes here
        values, keys, paths = self.values, self.keys, self.paths
        stack = [(node, path)]
        while stack:
            node, path = stack.pop()
            mark = node.start_mark
            values[path] = (mark.line + 1, mark.column + 1)
            if isinstance(node, MappingNode):
                paths[id(node)] = path
                for key, value in node.value:
                    child = path + (key.value,)
                    mark = key.start_mark
                    keys[child] = (mark.line + 1, mark.column + 1)
                    if isinstance(value, MappingNode | SequenceNode):
                        stack.append((value, child))
                    else:
                        mark = value.start_mark
                        values[child] = (mark.line + 1, mark.column + 1)
            elif isinstance(node, SequenceNode):
                paths[id(node)] = path
                for index, item in enumerate(node.value):
                    stack.append((item, path + (index,)))

    def where(self, node: Node) -> Where:
        """The view of a mapping or sequence node of this document."""
        return Where(self, self.paths[id(node)])


@dataclass(frozen=True)
class Where:
    """One spec object's place: its key path in the document's :class:`SourceMap`.

    ``node`` is where the object starts; ``at("path")`` where its ``path`` value starts; ``key("models")``
    where the ``models`` key is written. Objects built in code (no file) answer (1, 1).
    """

    source: SourceMap = field(default_factory=SourceMap)
    path: KeyPath = ()

    @property
    def node(self) -> Pos:
        return self.source.values.get(self.path, (1, 1))

    def at(self, *keys: str | int) -> Pos:
        """The value position of a field; KeyError when the object has no such field."""
        return self.source.values[(*self.path, *keys)]

    def get(self, *keys: str | int, default: Pos | None = None) -> Pos:
        """The value position of a field, else ``default``, else the object's own position."""
        found = self.source.values.get((*self.path, *keys))
        return found if found is not None else (default if default is not None else self.node)

    def key(self, *keys: str | int) -> Pos:
        """Where a field's key is written (with no keys: the key this object is the value of)."""
        return self.source.keys[(*self.path, *keys)]

    def has(self, *keys: str | int) -> bool:
        return (*self.path, *keys) in self.source.values

    def child(self, *keys: str | int) -> Where:
        return Where(self.source, (*self.path, *keys))
