"""Reading inputs and outputs: the folders an operator reads and writes (V10, V19-V22)."""

from __future__ import annotations

from clara_airflow.spec.checker import Fields, is_null
from clara_airflow.spec.containers import ContainerReader
from clara_airflow.spec.fields import IO, TYPED_KEYS
from clara_airflow.spec.model import SHARED_MEMORY_TYPES, InputSpec, OutputSpec
from clara_airflow.spec.positions import Where
from clara_airflow.spec.source import Node


class FolderReader(ContainerReader):
    """``input`` and ``output`` entries; their typed keys depend on the api-version (V20)."""

    def _io_fields(self, node: Node, what: str) -> tuple[Fields | None, bool]:
        """Returns (fields, shared_memory); typed keys before 0.5.0 give V20 instead of V9."""
        typed = self.version >= "0.5.0"
        fields = self.fields(node, IO, what)
        if fields is None:
            return None, False
        if not typed:
            for key in TYPED_KEYS:
                if key in fields and self.known_version:
                    self.c.error(fields[key][0], "V20", f"`{key}` in {what} requires api-version {IO.since[key]} "
                                 f"or later (this pipeline is {self.version}); remove it or raise the api-version")
            return fields, False
        if "type" not in fields or is_null(fields["type"][1]):
            self.c.error(node, "V10", f"missing required key 'type' in {what} (api-version {self.version} is typed)")
            return fields, False
        type_node = fields["type"][1]
        kind = self.c.string(type_node, f"type of {what}")
        if kind in SHARED_MEMORY_TYPES:
            self.c.error(type_node, "V22", f"{what} has type '{kind}', which is exchanged through shared "
                         "memory by the Clara pipeline driver; clara-airflow supports only `type: stream` "
                         "(a folder on disk)")
            return None, True
        if kind != "stream":
            self.c.error(type_node, "V21", f"unknown type '{kind}' in {what}; use `type: stream`")
            return None, False
        if "shape" in fields:
            self.c.error(fields["shape"][0], "V21", f"`shape` is not allowed on a stream in {what}")
        if "element-type" not in fields or is_null(fields["element-type"][1]):
            self.c.error(node, "V10", f"missing required key 'element-type' in {what}")
        return fields, False

    def _path(self, fields: Fields, what: str) -> str | None:
        node = fields["path"][1]
        value = self.c.string(node, f"path of {what}")
        if value is None:
            return None
        if not value.startswith("/") or not value.strip("/") or ":" in value or ".." in value.split("/"):
            self.c.error(node, "V19", f"path '{value}' of {what} must be absolute, not '/', and contain "
                         "no '..' segment and no ':' (e.g. /input)")
            return None
        return value

    def _input(self, node: Node, op_what: str) -> InputSpec | None:
        what = f"an input of {op_what}"
        fields, _ = self._io_fields(node, what)
        if fields is None:
            return None
        if "path" not in fields or is_null(fields["path"][1]):
            self.c.error(node, "V10", f"missing required key 'path' in {what}")
            return None
        source = self._opt(fields, "from", lambda n: self.c.name(n, f"`from` of {what}"))
        name = self._opt(fields, "name", lambda n: self.c.name(n, f"input name of {op_what}"))
        path = self._path(fields, what)
        if path is None:
            return None
        return InputSpec(path, source, name, self._opt(fields, "type", lambda n: n.value),
                         self._opt(fields, "element-type", lambda n: self.c.string(n, "element-type")),
                         Where(node))

    def _outputs(self, fields: Fields, op_what: str) -> list[OutputSpec]:
        nodes = self._seq(fields, "output")
        outputs = []
        for node in nodes:
            what = f"an output of {op_what}"
            sub, shared = self._io_fields(node, what)
            if shared:
                name_node = node.value and dict((k.value, v) for k, v in node.value).get("name")
                name = self.c.name(name_node, f"output name of {op_what}") if name_node is not None else None
                outputs.append(OutputSpec("", name, "shared-memory", None, Where(node)))
                continue
            if sub is None:
                continue
            typed = self.version >= "0.5.0"
            if ("name" not in sub or is_null(sub["name"][1])) and (typed or len(nodes) > 1):
                why = "every typed output needs one" if typed else "an operator with two or more outputs must name each"
                self.c.error(node, "V10", f"missing required key 'name' in {what}: {why}")
            if "from" in sub:
                self.c.error(sub["from"][0], "V9", f"unknown key 'from' in {what}; only inputs take `from`")
            if "path" not in sub or is_null(sub["path"][1]):
                self.c.error(node, "V10", f"missing required key 'path' in {what}")
                continue
            name = self._opt(sub, "name", lambda n: self.c.name(n, f"output name of {op_what}"))
            path = self._path(sub, what)
            if path is not None:
                outputs.append(OutputSpec(path, name, self._opt(sub, "type", lambda n: n.value),
                                          self._opt(sub, "element-type", lambda n: n.value),
                                          Where(node)))
        return outputs
