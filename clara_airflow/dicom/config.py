"""The DICOM receiver's configuration (``dicom.yaml``): read safely, validated by pydantic, every problem
reported at once as ``PATH:LINE:COL: message``. No Airflow and no pynetdicom here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clara_airflow.errors import Problem, SpecError
from clara_airflow.spec.positions import Where
from clara_airflow.spec.source import read_document

__all__ = ["AirflowApi", "DicomConfig", "Destination", "Listen", "Route", "Rule", "Source", "configured_destinations", "folder_aet",
           "load_config", "valid_aet"]

_AET = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ASCII without backslash, 1-16 characters


def valid_aet(value: str) -> str:
    if not _AET.fullmatch(value) or not value.strip():
        raise ValueError(f"{value!r} is not an AE title (1-16 printable ASCII characters, no backslash, not blank)")
    return value.strip()


def folder_aet(value: str) -> str:
    """A called AE title that routes: it becomes a folder name (``<inbox>/<AE>/``), so beyond DICOM's rules
    it holds no ``/`` and is not ``.`` or ``..``."""
    title = valid_aet(value)
    if "/" in title or title in (".", ".."):
        raise ValueError(f"{value!r} cannot be a routed AE title: it becomes a folder name, so it may not contain "
                         "'/' or be '.' or '..'")
    return title


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    ae_title: str = "CLARA"
    status_port: int | None = Field(default=None, ge=0, le=65535)  # /health and /metrics; unset: off
    status_host: str = "127.0.0.1"
    # anchored: pydantic's pattern matches anywhere in the value, so "1TOKEN" would pass unanchored
    status_token_env: str = Field(default="CLARA_DICOM_STATUS_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

    _aet = field_validator("ae_title")(valid_aet)


class AirflowApi(_Model):
    url: str = "http://localhost:8080"
    username_env: str = "CLARA_AIRFLOW_USER"
    password_env: str = "CLARA_AIRFLOW_PASSWORD"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL of the Airflow API server")
        return value.rstrip("/")


def _pipeline(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,250}", name):
        raise ValueError(f"{name!r} is not a pipeline (DAG) name")
    return name


def _keyword(keyword: str) -> str:
    """A DICOM keyword of pydicom's dictionary whose value can be matched (not a sequence)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        from difflib import get_close_matches

        from pydicom.datadict import keyword_dict

        close = get_close_matches(keyword, list(keyword_dict), n=1)
        hint = f"; did you mean {close[0]}?" if close else " (keywords are CamelCase, like Modality or BodyPartExamined)"
        raise ValueError(f"{keyword!r} is not a DICOM keyword{hint}")
    if dictionary_VR(tag) == "SQ":
        raise ValueError(f"{keyword!r} is a sequence; a rule matches the value of a plain element")
    return keyword


def _pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
    return pattern


Pipeline = Annotated[str, AfterValidator(_pipeline)]
Keyword = Annotated[str, AfterValidator(_keyword)]
Pattern = Annotated[str, AfterValidator(_pattern)]
Priority = Literal["lower", "normal", "higher", "immediate"]


class Rule(_Model):
    """Pipelines for the groups of which at least one instance matches every condition of ``when``
    (keyword: regular expression, full match, case-insensitive)."""

    when: dict[Keyword, Pattern] = Field(min_length=1)
    pipelines: list[Pipeline] = Field(min_length=1)
    priority: Priority | None = None  # unset: the AE title's


class Route(_Model):
    pipelines: list[Pipeline] = []  # every group
    rules: list[Rule] = []  # in order: every rule that matches (the first only, with first_match)
    default: list[Pipeline] = []  # when no rule matches
    first_match: bool = False
    group_by: Literal["study", "series"] = "study"
    timeout: float = Field(default=5.0, gt=0, le=3600)
    priority: Priority = "normal"

    @model_validator(mode="after")
    def _routes_something(self) -> Route:
        if not self.pipelines and not self.rules:
            raise ValueError("routes no pipeline: give it pipelines (every group) or rules (groups by their tags)")
        return self

    def every_pipeline(self) -> list[str]:
        """Every pipeline this AE title may start."""
        names = [*self.pipelines, *(p for rule in self.rules for p in rule.pipelines), *self.default]
        return list(dict.fromkeys(names))


class Source(_Model):
    ae_title: str
    host: str

    _aet = field_validator("ae_title")(valid_aet)


class Destination(_Model):
    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str

    _aet = field_validator("ae_title")(valid_aet)


class DicomConfig(_Model):
    """What ``clara-airflow dicom listen`` reads; see docs/dicom.md for every key."""

    listen: Listen = Listen()
    inbox: str
    airflow: AirflowApi = AirflowApi()
    ae_titles: dict[str, Route] = Field(min_length=1)
    sources: list[Source] = []
    destinations: dict[str, Destination] = {}
    reject_unknown_sources: bool = True
    min_free_disk_mb: int = Field(default=5120, ge=0)
    max_associations: int = Field(default=50, ge=1, le=1000)
    max_pdu: int = Field(default=4_194_304, ge=0, le=2**31 - 1)
    max_instance_mb: int = Field(default=4096, ge=1)

    @field_validator("inbox")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be an absolute path without '..'")
        return value.rstrip("/") or "/"

    @field_validator("ae_titles")
    @classmethod
    def _called(cls, value: dict[str, Route]) -> dict[str, Route]:
        return {folder_aet(k): v for k, v in value.items()}


def load_config(path: str | Path) -> DicomConfig:
    """Read and validate ``dicom.yaml``.

    :raises SpecError: every problem, each positioned in the file, with what is allowed.
    """
    name = str(path)
    root = read_document(name, Path(path).read_bytes())  # size, alias and tag bounds of the pipeline reader
    data: Any = yaml.SafeLoader("").construct_document(root)
    if not isinstance(data, dict):
        raise SpecError([Problem(name, 1, 1, "the DICOM configuration must be a mapping (listen:, inbox:, ...)", "D1")])
    try:
        return DicomConfig.model_validate(data)
    except ValidationError as exc:
        where = Where(root)
        problems = []
        for error in exc.errors():
            keys = tuple(error["loc"])
            line, col = _position(where, keys)
            dotted = ".".join(str(k) for k in keys if k != "[key]") or "the file"
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown key '{keys[-1]}'; see docs/dicom.md for the keys"
            elif error["type"] == "missing":
                message = f"'{keys[-1]}' is required"
            problems.append(Problem(name, line, col, f"{dotted}: {message}", "D1"))
        raise SpecError(problems) from None


def configured_destinations(dicom_config: str | None) -> tuple[str, ...] | None:
    """The destination names of ``[clara] dicom_config`` (None when unset).

    :raises SpecError: the file is broken; :raises OSError: it cannot be read."""
    return None if not dicom_config else tuple(load_config(dicom_config).destinations)


def environment_destinations() -> tuple[str, ...] | None:
    """The destination names of the ``[clara] dicom_config`` set in this process's environment
    (``AIRFLOW__CLARA__DICOM_CONFIG``), for the command line's validate and inspect."""
    from clara_airflow.spec.defaults import environ_options

    return configured_destinations(environ_options().get("dicom_config"))


def _position(where: Where, keys: tuple[Any, ...]) -> tuple[int, int]:
    """The deepest position of ``keys`` the file has (a missing key: its parent mapping)."""
    for cut in range(len(keys), 0, -1):
        if where.has(*keys[:cut]):
            return where.key(*keys[:cut]) if isinstance(keys[cut - 1], str) else where.at(*keys[:cut])
    return where.node
