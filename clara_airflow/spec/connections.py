"""Reading services (section 7), their connections, and ``models`` (api-version 0.6.0)."""

from __future__ import annotations

from functools import partial

from clara_airflow.spec import crosscheck
from clara_airflow.spec.checker import Fields, is_null
from clara_airflow.spec.fields import CONNECTIONS, HTTP, MODEL, OPERATOR, SERVICE, VOLUME
from clara_airflow.spec.folders import FolderReader
from clara_airflow.spec.model import HttpConnectionSpec, ServiceSpec, VolumeConnectionSpec
from clara_airflow.spec.positions import Where
from clara_airflow.spec.reader import peek_name
from clara_airflow.spec.source import Node, position


class ServiceReader(FolderReader):
    """``services`` of an operator, with ``connections`` (V27 ports), and ``models``."""

    def _service(self, node: Node, op_what: str) -> ServiceSpec | None:
        if self._is_import(node):
            return None
        c = self.c
        label = peek_name(node)
        what = f"service '{label}' of {op_what}" if label else f"a service of {op_what}"
        fields = self.fields(node, SERVICE, what)
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
                           Where(node))

    def _connections(self, fields: Fields, what: str
                     ) -> tuple[list[HttpConnectionSpec], list[VolumeConnectionSpec]]:
        if "connections" not in fields or is_null(fields["connections"][1]):
            return [], []
        sub = self.fields(fields["connections"][1], CONNECTIONS, f"`connections` of {what}")
        http, volumes = [], []
        for node in self._seq(sub or {}, "http"):
            entry = self.fields(node, HTTP, f"an http connection of {what}")
            if entry is None or "name" not in entry or is_null(entry["name"][1]):
                continue
            name = self._conn_name(entry["name"][1], what)
            port = self._opt(entry, "port", lambda n: self.c.integer(n, f"port of {what}"))
            if port is not None and not 1024 <= port <= 65535:
                self.c.error(entry["port"][1], "V27", f"port {port} of connection "
                             f"'{entry['name'][1].value}' must be between 1024 and 65535")
                continue
            if name is not None:
                http.append(HttpConnectionSpec(name, port, Where(node)))
        for kind in ("volume", "file"):
            for node in self._seq(sub or {}, kind):
                entry = self.fields(node, VOLUME, f"a {kind} connection of {what}")
                if entry is None or any(k not in entry or is_null(entry[k][1]) for k in ("name", "path")):
                    continue
                name = self._conn_name(entry["name"][1], what)
                path = self._path(entry, f"{kind} connection of {what}")
                if name is not None and path is not None:
                    volumes.append(VolumeConnectionSpec(name, path, Where(node)))
        return http, volumes

    def _conn_name(self, node: Node, what: str) -> str | None:
        name = self.c.name(node, f"connection name of {what}")
        if name is not None and not self.c.env_name(node, name, "connection name"):
            return None
        return name

    def _models(self, fields: Fields, what: str) -> list[str]:
        nodes = self._seq(fields, "models")
        if nodes and self.version < OPERATOR.since["models"]:
            self.c.warn(fields["models"][0], f"`models` belongs to api-version {OPERATOR.since['models']} and later "
                        f"(this pipeline is {self.version})")
        names = []
        for node in nodes:
            entry = self.fields(node, MODEL, f"a model of {what}")
            if entry and "name" in entry and not is_null(entry["name"][1]):
                name = self.c.name(entry["name"][1], f"model name of {what}")
                if name is not None:
                    names.append((name, partial(position, entry["name"][1])))
        crosscheck.unique_names(self.c, names, f"model of {what}")
        return [n for n, _ in names]
