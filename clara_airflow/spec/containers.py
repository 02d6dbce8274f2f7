"""Reading what every operator and service has: its container, variables, requests and parameters."""

from __future__ import annotations

from clara_airflow.spec.checker import Checker, Fields, is_null, valid_image, valid_tag
from clara_airflow.spec.fields import CONTAINER, REQUESTS
from clara_airflow.spec.model import ContainerSpec, ParameterSpec, RequestsSpec
from clara_airflow.spec.positions import Where
from clara_airflow.spec.reader import NodeReader
from clara_airflow.spec.source import Node


class ContainerReader(NodeReader):
    """Containers (V18 image and tag), ``variables``, ``requests`` (V26) and ``parameters`` (V32)."""

    def _parameters(self, fields: Fields, where: str) -> list[ParameterSpec]:
        if "parameters" not in fields:
            return []
        params = []
        mapping = fields["parameters"][1]
        for key, value in self.c.pairs(mapping, f"`parameters` of {where}"):
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
                params.append(ParameterSpec(name, default, Where(mapping).child(key.value)))
        return params

    def _container(self, fields: Fields, what: str, *, allow_variables: bool, service: bool = False
                   ) -> tuple[ContainerSpec | None, list[tuple[Node, Node, str]]]:
        if "container" not in fields or is_null(fields["container"][1]):
            return None, []
        node = fields["container"][1]
        table = CONTAINER.plus("variables") if allow_variables else CONTAINER
        table = table.plus("hostVolumePath") if service else table
        sub = self.fields(node, table, f"the container of {what}")
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
                             Where(node), host_volume), variables

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
        sub = self.fields(fields["requests"][1], REQUESTS, f"`requests` of {what}")
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


def _check_image(c: Checker, node: Node, image: str, tag: str, tag_field: tuple[Node, Node] | None) -> None:
    """V18 for values without placeholders (those are checked after substitution at run time)."""
    if "${{" not in image and not valid_image(image):
        fix = " (put the tag in `tag`)" if ":" in image.rsplit("/", 1)[-1] else ""
        c.error(node, "V18", f"image '{image}' is not a valid image name without tag or digest{fix}")
    if tag_field is not None and "${{" not in tag and not valid_tag(tag):
        c.error(tag_field[1], "V18", f"tag '{tag}' is not a valid image tag (letters, digits, '_', '.', "
                "'-'; at most 128 characters)")
