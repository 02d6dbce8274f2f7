"""The generic part of reading a pipeline body: a node reader that records problems instead of
stopping, reads fields by the field table, and keeps the api-version in force (clara-pdl.md V12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from clara_airflow.spec.checker import Checker, Fields, is_null
from clara_airflow.spec.fields import Table
from clara_airflow.spec.model import API_VERSIONS, ParameterSpec
from clara_airflow.spec.source import MappingNode, Node

T = TypeVar("T")


class NodeReader:
    """Walks the node tree once, building spec objects and recording problems."""

    def __init__(self, checker: Checker) -> None:
        self.c = checker
        self.version = "0.4.0"
        self.known_version = True
        self.top_params: list[ParameterSpec] = []
        self.operator_names: set[str] = set()

    def fields(self, node: Node, table: Table, what: str) -> Fields | None:
        """A fixed-key mapping read by its table (V9 unknown, V10 required, V11 kind)."""
        return self.c.mapping(node, what, table.keys, table.required)

    def _api_version(self, fields: Fields, where: str = "the pipeline") -> str | None:
        if "api-version" not in fields:
            return None
        node = fields["api-version"][1]
        value = self.c.string(node, "api-version")
        if value not in API_VERSIONS:
            if value is not None or not is_null(node):
                self.c.error(node, "V12", f"api-version '{value}' of {where} is not supported; "
                             f"use one of {', '.join(API_VERSIONS)}")
            self.known_version = where != "the pipeline" and self.known_version
            return None
        return value

    def _opt(self, fields: Fields, key: str, read):  # type: ignore[no-untyped-def]
        return read(fields[key][1]) if key in fields and not is_null(fields[key][1]) else None

    def _seq(self, fields: Fields, key: str) -> list[Node]:
        return self.c.sequence(fields[key][1], f"`{key}`") if key in fields else []

    def _read(self, reader: Callable[..., T | None], node: Node, what: str, *args: Any) -> T | None:
        """Run ``reader``; a rejected entry always leaves an error, so nothing is ever dropped silently."""
        before = len(self.c.problems)
        value = reader(node, *args)
        if value is None and len(self.c.problems) == before:
            self.c.error(node, "V11", f"{what} could not be read; check its fields against clara-pdl.md")
        return value

    def _is_import(self, node: Node) -> bool:
        if not isinstance(node, MappingNode):
            return False
        for key, _ in node.value:
            if key.value == "import":
                self.c.error(key, "V8", "`import` entries are not supported; copy the imported "
                             "definition into this file")
                return True
        return False


def peek_name(node: Node) -> str | None:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.value == "name" and isinstance(value, type(key)):
                return str(value.value)
    return None
