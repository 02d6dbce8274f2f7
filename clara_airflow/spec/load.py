"""load_pipeline(path) -> PipelineSpec: every rule of clara-pdl.md section 13, all problems at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from clara_airflow.errors import SpecError
from clara_airflow.spec import crosscheck
from clara_airflow.spec.checker import Checker, Fields, is_null, valid_image, valid_tag
from clara_airflow.spec.defaults import parse_airflow_block
from clara_airflow.spec.model import (
    API_VERSIONS,
    ERROR_DAG_PREFIX,
    MAX_DAG_ID,
    REAPER_DAG_ID,
    SHARED_MEMORY_TYPES,
    ContainerSpec,
    HttpConnectionSpec,
    InputSpec,
    OperatorSpec,
    OutputSpec,
    ParameterSpec,
    PipelineSpec,
    RequestsSpec,
    ServiceSpec,
    VolumeConnectionSpec,
)
from clara_airflow.spec.source import MappingNode, Node, SequenceNode, position, read_document, read_pipeline_bytes

log = logging.getLogger(__name__)

TOP_KEYS = frozenset({"api-version", "name", "operators", "orchestrator", "description", "pull-secrets",
                      "parameters", "x-airflow"})
OPERATOR_KEYS = frozenset({"name", "description", "container", "input", "output", "requests",
                           "variables", "services", "models", "parameters", "api-version"})
SERVICE_KEYS = frozenset({"name", "description", "container", "requests", "variables", "connections",
                          "api-version"})
CONTAINER_KEYS = frozenset({"image", "tag", "command"})
IO_KEYS = frozenset({"from", "name", "path"})
TYPED_KEYS = ("type", "element-type", "shape")
T = TypeVar("T")


def load_pipeline(path: str | Path, data: bytes | None = None) -> PipelineSpec:
    """Read and validate one pipeline file.

    :param path: the file; also the name used in messages.
    :param data: the file's bytes, when already read.
    :raises SpecError: listing every problem, sorted, each as ``PATH:LINE:COL: message``.
    """
    name = str(path)
    root = read_document(name, read_pipeline_bytes(path) if data is None else data)
    checker = Checker(name)
    spec = _Reader(checker).pipeline(root)
    if checker.problems or spec is None:
        raise SpecError(checker.problems)
    for warning in sorted(checker.warnings):
        log.warning("%s", warning)
    return spec


class _Reader:
    """Walks the node tree once, building spec objects and recording problems."""

    def __init__(self, checker: Checker) -> None:
        self.c = checker
        self.version = "0.4.0"
        self.known_version = True
        self.top_params: list[ParameterSpec] = []
        self.operator_names: set[str] = set()

    # -- pipeline -----------------------------------------------------------------------------------
    def pipeline(self, root: Node) -> PipelineSpec | None:
        c = self.c
        fields = c.mapping(root, "the pipeline", TOP_KEYS, ("api-version", "name", "operators"))
        if fields is None:
            return None
        self.version = self._api_version(fields) or "0.4.0"
        name = self._opt(fields, "name", lambda n: c.name(n, "pipeline name", max_len=MAX_DAG_ID))
        if name is not None and (name.lower() == REAPER_DAG_ID or name.lower().startswith(ERROR_DAG_PREFIX)):
            c.error(fields["name"][1], "V14", f"pipeline name '{name}' is reserved by clara-airflow (its own "
                    f"{'service reaper' if name.lower() == REAPER_DAG_ID else 'broken-file'} DAG); rename the pipeline")
            name = None
        orchestrator = self._opt(fields, "orchestrator", lambda n: c.string(n, "orchestrator"))
        if orchestrator is not None and orchestrator.lower() not in ("clara", "argo"):
            c.error(fields["orchestrator"][1], "V13",
                    f"orchestrator '{orchestrator}' is not supported; use Clara or Argo (or leave it out)")
        description = self._opt(fields, "description", lambda n: c.string(n, "description", free_text=True))
        secrets = [c.string(n, "pull-secrets item") for n in self._seq(fields, "pull-secrets")]
        self.top_params = self._parameters(fields, "the pipeline")
        c.scope = {p.name.lower() for p in self.top_params}
        airflow = parse_airflow_block(c, fields["x-airflow"][1]) if "x-airflow" in fields else {}
        operators = self._operators(fields)
        spec = PipelineSpec(
            path=c.path, api_version=self.version, name=name or "", operators=tuple(operators),
            description=description or "", orchestrator=orchestrator,
            pull_secrets=tuple(s for s in secrets if s), parameters=tuple(self.top_params),
            airflow=airflow, warnings=tuple(sorted(c.warnings)), where=_where(root, fields),
        )
        crosscheck.check_pipeline(c, spec, self.operator_names)
        return None if c.problems or name is None else spec

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

    def _parameters(self, fields: Fields, where: str) -> list[ParameterSpec]:
        if "parameters" not in fields:
            return []
        params = []
        for key, value in self.c.pairs(fields["parameters"][1], f"`parameters` of {where}"):
            name = self.c.name(key, "parameter")
            if name is not None and name.lower() == "clara_payload":
                self.c.error(key, "V32", "parameter name 'clara_payload' is reserved for the run's "
                             "payload folder; rename the parameter")
                continue
            if is_null(value):
                self.c.error(value, "V11", f"parameter '{key.value}' must be a string default, not null")
                continue
            default = self.c.string(value, f"parameter '{key.value}' default", quote_hint=True)
            if name is not None and default is not None:
                params.append(ParameterSpec(name, default, {"@": position(key)}))
        return params

    # -- operators ----------------------------------------------------------------------------------
    def _operators(self, fields: Fields) -> list[OperatorSpec]:
        if "operators" not in fields or is_null(fields["operators"][1]):
            return []
        node = fields["operators"][1]
        nodes = self.c.sequence(node, "`operators`")
        if not nodes and isinstance(node, SequenceNode):
            self.c.error(node, "V11", "`operators` must be a non-empty list of operators")
        operators = []
        self.operator_names = {n.lower() for n in map(_peek_name, nodes) if n}
        for node in nodes:
            if self._is_import(node):
                continue
            op = self._read(self._operator, node, "an operator")
            if op is not None:
                operators.append(op)
        return operators

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

    def _operator(self, node: Node) -> OperatorSpec | None:
        c = self.c
        label = _peek_name(node)
        what = f"operator '{label}'" if label else "an operator"
        fields = c.mapping(node, what, OPERATOR_KEYS, ("name", "container"))
        if fields is None:
            return None
        name = self._opt(fields, "name", lambda n: c.name(n, "operator name", max_len=250))
        self._api_version(fields, what)
        own_params = self._parameters(fields, what)
        outer_scope = c.scope
        c.scope = set(outer_scope) | {p.name.lower() for p in own_params}
        try:
            container, container_vars = self._container(fields, what, allow_variables=True)
            variables = self._variables(fields, what)
            requests = self._requests(fields, what)
            inputs = [i for n in self._seq(fields, "input") if (i := self._read(self._input, n, "an input", what))]
            outputs = self._outputs(fields, what)
            services = [s for n in self._seq(fields, "services")
                        if (s := self._read(self._service, n, "a service", what))]
            models = self._models(fields, what)
        finally:
            c.scope = outer_scope
        if name is None or container is None:
            return None
        merged, var_where = crosscheck.merge_variables(c, container_vars, variables, what)
        return OperatorSpec(
            name=name, container=container, inputs=tuple(inputs), outputs=tuple(outputs),
            requests=requests, variables=merged, services=tuple(services), models=tuple(models),
            parameters=tuple(own_params),
            description=self._opt(fields, "description",
                                  lambda n: c.string(n, "description", free_text=True)) or "",
            where={**_where(node, fields), **var_where},
        )

    def _container(self, fields: Fields, what: str, *, allow_variables: bool, service: bool = False
                   ) -> tuple[ContainerSpec | None, list[tuple[Node, Node, str]]]:
        if "container" not in fields or is_null(fields["container"][1]):
            return None, []
        node = fields["container"][1]
        allowed = CONTAINER_KEYS | {"variables"} if allow_variables else CONTAINER_KEYS
        allowed = allowed | {"hostVolumePath"} if service else allowed
        sub = self.c.mapping(node, f"the container of {what}", allowed, ("image",))
        if sub is None:
            return None, []
        image = self._opt(sub, "image", lambda n: self.c.string(n, "image", placeholders=True))
        tag = self._opt(sub, "tag", lambda n: self.c.string(n, "tag", placeholders=True, quote_hint=True))
        command: list[str | None] = []
        for item in self._seq(sub, "command"):
            if is_null(item):
                self.c.error(item, "V11", f"a command item of {what} is empty (null); write every item as "
                             'a string, e.g. "" for an empty argument')
                command.append(None)
            else:
                command.append(self.c.string(item, "command item", placeholders=True))
        if image is not None:
            _check_image(self.c, sub["image"][1], image, tag or "latest", sub.get("tag"))
        variables = self._variables(sub, f"the container of {what}")
        host_volume = self._host_volume(sub, what)
        if image is None or None in command:
            return None, variables
        return ContainerSpec(image, tag or "latest", tuple(c for c in command if c is not None),
                             _where(node, sub), host_volume), variables

    def _host_volume(self, sub: Fields, what: str) -> str | None:
        """``hostVolumePath`` (NVIDIA's reference pipelines): a host folder mounted read-only at the same
        path in the service container."""
        if "hostVolumePath" not in sub:
            return None
        node = sub["hostVolumePath"][1]
        path = self.c.string(node, "hostVolumePath")
        if path is None or not path.startswith("/") or ".." in path.split("/"):
            self.c.error(node, "V11", f"hostVolumePath of {what} must be an absolute path without '..', not {path!r}")
            return None
        clean = path.rstrip("/") or "/"
        self.c.warn(node, f"hostVolumePath of {what} mounts the host folder {clean} read-only at the same path in "
                    "the service container: a path on the machine (or Kubernetes node) that runs the service")
        return clean

    def _variables(self, fields: Fields, what: str) -> list[tuple[Node, Node, str]]:
        if "variables" not in fields:
            return []
        found = []
        for key, value in self.c.pairs(fields["variables"][1], f"`variables` of {what}"):
            if not self.c.env_name(key, key.value, "variable"):
                continue
            if is_null(value):
                self.c.error(value, "V11", f"variable '{key.value}' of {what} must be a string, not null")
                continue
            text = self.c.string(value, f"variable {key.value}", placeholders=True, quote_hint=True)
            if text is not None:
                found.append((key, value, text))
        return found

    def _requests(self, fields: Fields, what: str) -> RequestsSpec:
        if "requests" not in fields or is_null(fields["requests"][1]):
            return RequestsSpec()
        sub = self.c.mapping(fields["requests"][1], f"`requests` of {what}", ("cpu", "memory", "gpu"))
        values: dict[str, int | None] = {}
        for key, low in (("cpu", 1), ("memory", 1), ("gpu", 0)):
            node = (sub or {}).get(key, (None, None))[1]
            value = None if node is None else self.c.integer(node, f"requests.{key} of {what}")
            if value is not None and node is not None and value < low:
                unit = "MiB" if key == "memory" else ("GPUs" if key == "gpu" else "cores")
                self.c.error(node, "V26", f"requests.{key} of {what} must be at least {low} {unit}, "
                             f"not {value}")
                value = None
            values[key] = value
        return RequestsSpec(**values)

    # -- inputs and outputs --------------------------------------------------------------------------
    def _io_fields(self, node: Node, what: str) -> tuple[Fields | None, bool]:
        """Returns (fields, shared_memory); typed keys before 0.5.0 give V20 instead of V9."""
        typed = self.version >= "0.5.0"
        fields = self.c.mapping(node, what, IO_KEYS | set(TYPED_KEYS))
        if fields is None:
            return None, False
        if not typed:
            for key in TYPED_KEYS:
                if key in fields and self.known_version:
                    self.c.error(fields[key][0], "V20", f"`{key}` in {what} requires api-version 0.5.0 "
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
                         _where(node, fields))

    def _outputs(self, fields: Fields, op_what: str) -> list[OutputSpec]:
        nodes = self._seq(fields, "output")
        outputs = []
        for node in nodes:
            what = f"an output of {op_what}"
            sub, shared = self._io_fields(node, what)
            if shared:
                name_node = node.value and dict((k.value, v) for k, v in node.value).get("name")
                name = self.c.name(name_node, f"output name of {op_what}") if name_node is not None else None
                outputs.append(OutputSpec("", name, "shared-memory", None, _where(node, None)))
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
                                          _where(node, sub)))
        return outputs

    # -- services and models --------------------------------------------------------------------------
    def _service(self, node: Node, op_what: str) -> ServiceSpec | None:
        if self._is_import(node):
            return None
        c = self.c
        label = _peek_name(node)
        what = f"service '{label}' of {op_what}" if label else f"a service of {op_what}"
        fields = c.mapping(node, what, SERVICE_KEYS, ("name", "container"))
        if fields is None:
            return None
        name = self._opt(fields, "name", lambda n: c.name(n, "service name"))
        self._api_version(fields, what)
        container, _ = self._container(fields, what, allow_variables=False, service=True)
        var_nodes = self._variables(fields, what)
        variables = tuple((k.value, text) for k, _, text in var_nodes)
        http, volumes = self._connections(fields, what)
        if name is None or container is None:
            return None
        return ServiceSpec(name, container, self._requests(fields, what), variables, tuple(http),
                           tuple(volumes), self._opt(fields, "description",
                                                     lambda n: c.string(n, "description", free_text=True)) or "",
                           {**_where(node, fields), **{f"val:{k.value}": position(v) for k, v, _ in var_nodes}})

    def _connections(self, fields: Fields, what: str
                     ) -> tuple[list[HttpConnectionSpec], list[VolumeConnectionSpec]]:
        if "connections" not in fields or is_null(fields["connections"][1]):
            return [], []
        sub = self.c.mapping(fields["connections"][1], f"`connections` of {what}", ("http", "volume", "file"))
        http, volumes = [], []
        for node in self._seq(sub or {}, "http"):
            entry = self.c.mapping(node, f"an http connection of {what}", ("name", "port"), ("name",))
            if entry is None or "name" not in entry or is_null(entry["name"][1]):
                continue
            name = self._conn_name(entry["name"][1], what)
            port = self._opt(entry, "port", lambda n: self.c.integer(n, f"port of {what}"))
            if port is not None and not 1024 <= port <= 65535:
                self.c.error(entry["port"][1], "V27", f"port {port} of connection "
                             f"'{entry['name'][1].value}' must be between 1024 and 65535")
                continue
            if name is not None:
                http.append(HttpConnectionSpec(name, port, _where(node, entry)))
        for kind in ("volume", "file"):
            for node in self._seq(sub or {}, kind):
                entry = self.c.mapping(node, f"a {kind} connection of {what}", ("name", "path"), ("name", "path"))
                if entry is None or any(k not in entry or is_null(entry[k][1]) for k in ("name", "path")):
                    continue
                name = self._conn_name(entry["name"][1], what)
                path = self._path(entry, f"{kind} connection of {what}")
                if name is not None and path is not None:
                    volumes.append(VolumeConnectionSpec(name, path, _where(node, entry)))
        return http, volumes

    def _conn_name(self, node: Node, what: str) -> str | None:
        name = self.c.name(node, f"connection name of {what}")
        if name is not None and not self.c.env_name(node, name, "connection name"):
            return None
        return name

    def _models(self, fields: Fields, what: str) -> list[str]:
        nodes = self._seq(fields, "models")
        if nodes and self.version < "0.6.0":
            self.c.warn(fields["models"][0], f"`models` belongs to api-version 0.6.0 and later "
                        f"(this pipeline is {self.version})")
        names = []
        for node in nodes:
            entry = self.c.mapping(node, f"a model of {what}", ("name",), ("name",))
            if entry and "name" in entry and not is_null(entry["name"][1]):
                name = self.c.name(entry["name"][1], f"model name of {what}")
                if name is not None:
                    names.append((name, entry["name"][1]))
        crosscheck.unique_names(self.c, names, f"model of {what}")
        return [n for n, _ in names]


def _where(node: Node, fields: Fields | None) -> dict[str, tuple[int, int]]:
    """Positions of a mapping and of each field's key and value (``position`` inlined: every field of
    every file passes here)."""
    where = {"@": position(node)}
    for key, (key_node, value) in (fields or {}).items():
        mark = value.start_mark
        where[key] = (mark.line + 1, mark.column + 1)
        mark = key_node.start_mark
        where["key:" + key] = (mark.line + 1, mark.column + 1)
    return where


def _peek_name(node: Node) -> str | None:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.value == "name" and isinstance(value, type(key)):
                return str(value.value)
    return None


def _check_image(c: Checker, node: Node, image: str, tag: str, tag_field: tuple[Node, Node] | None) -> None:
    """V18 for values without placeholders (those are checked after substitution at run time)."""
    if "${{" not in image and not valid_image(image):
        fix = " (put the tag in `tag`)" if ":" in image.rsplit("/", 1)[-1] else ""
        c.error(node, "V18", f"image '{image}' is not a valid image name without tag or digest{fix}")
    if tag_field is not None and "${{" not in tag and not valid_tag(tag):
        c.error(tag_field[1], "V18", f"tag '{tag}' is not a valid image tag (letters, digits, '_', '.', "
                "'-'; at most 128 characters)")
