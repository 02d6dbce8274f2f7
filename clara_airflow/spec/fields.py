"""The field table of the pipeline body (clara-pdl.md sections 3-8): for each kind of object, the keys
it may have, the keys it must have, and the api-version each version-dependent key needs. The readers
take every allowed and required key from here, as ``defaults.py``'s SCHEMA does for ``x-airflow``."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CONNECTIONS", "CONTAINER", "HTTP", "IO", "MODEL", "OPERATOR", "PIPELINE", "REQUESTS", "SERVICE",
           "TYPED_KEYS", "VOLUME", "Table"]


@dataclass(frozen=True)
class Table:
    """One object's fields. :param since: key -> the first api-version that has it."""

    keys: frozenset[str]
    required: tuple[str, ...] = ()
    since: dict[str, str] = field(default_factory=dict)

    def plus(self, *keys: str) -> Table:
        return Table(self.keys | frozenset(keys), self.required, self.since)


TYPED_KEYS = ("type", "element-type", "shape")  # inputs and outputs of typed (0.5.0+) pipelines

PIPELINE = Table(frozenset({"api-version", "name", "operators", "orchestrator", "description", "pull-secrets",
                            "parameters", "x-airflow"}), ("api-version", "name", "operators"))
OPERATOR = Table(frozenset({"name", "description", "container", "input", "output", "requests", "variables",
                            "services", "models", "parameters", "api-version"}), ("name", "container"),
                 since={"models": "0.6.0"})
SERVICE = Table(frozenset({"name", "description", "container", "requests", "variables", "connections",
                           "api-version"}), ("name", "container"))
CONTAINER = Table(frozenset({"image", "tag", "command"}), ("image",))  # + variables (operators), hostVolumePath (services)
IO = Table(frozenset({"from", "name", "path", *TYPED_KEYS}), since=dict.fromkeys(TYPED_KEYS, "0.5.0"))
REQUESTS = Table(frozenset({"cpu", "memory", "gpu"}))
CONNECTIONS = Table(frozenset({"http", "volume", "file"}))
HTTP = Table(frozenset({"name", "port"}), ("name",))
VOLUME = Table(frozenset({"name", "path"}), ("name", "path"))
MODEL = Table(frozenset({"name"}), ("name",))
