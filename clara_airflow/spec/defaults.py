"""Deployment settings (D12): the ``x-airflow`` block, ``clara-defaults.yaml`` and Airflow's ``[clara]``.

Each layer is validated into flat keys (``payload.output_root``) so layers merge key by key.
Precedence, first wins: the pipeline's ``x-airflow`` block, then ``clara-defaults.yaml`` in the
dags folder, then ``[clara]``, then the defaults of :class:`clara_airflow.settings.PipelineSettings`,
which the compiler builds from the merged keys. Nothing past the compiler sees a flat key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Union

import yaml

from clara_airflow.errors import ClaraAirflowError, SpecError
from clara_airflow.settings import DEPLOYMENT_OPTIONS, K8S_NAME, Deployment, PipelineSettings, parse_deployment
from clara_airflow.spec.checker import Checker, hint, is_null, valid_image
from clara_airflow.spec.rules import parameter_rules as _parameter_rules
from clara_airflow.spec.source import DEFAULTS_FILE, NULL, MappingNode, Node, read_document

__all__ = ["DEFAULTS_FILE"]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "parameters":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    return flat


# The parser's flat keys (``payload.output_root``) and their defaults, from the one typed definition.
BUILTIN: dict[str, Any] = _flatten(PipelineSettings().to_dict())

Validator = Callable[[Checker, Node, str], Any]
_MISSING = object()
_PRESETS = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly",
            "@yearly", "@annually"}
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?#LW-]+")


def _bad(c: Checker, node: Node, key: str, message: str) -> object:
    c.error(node, "V33", f"x-airflow key '{key}' {message}")
    return _MISSING


def _string(c: Checker, node: Node, key: str) -> Any:
    value = c.string(node, f"x-airflow key '{key}'")
    return _MISSING if value is None and not is_null(node) else value


def _schedule(c: Checker, node: Node, key: str) -> Any:
    value = _string(c, node, key)
    if value is None or value is _MISSING:
        return value
    fields = value.split()
    if value in _PRESETS or (len(fields) in (5, 6) and all(_CRON_FIELD.fullmatch(f) for f in fields)):
        return value
    return _bad(c, node, key, f"must be a cron expression ('0 2 * * *'), an Airflow preset "
                f"({', '.join(sorted(_PRESETS))}) or null, not '{value}'")


def _start_date(c: Checker, node: Node, key: str) -> Any:
    value = _string(c, node, key)
    if isinstance(value, str):
        try:
            (datetime if "T" in value or " " in value else date).fromisoformat(value)
            return value
        except ValueError:
            pass
    return _bad(c, node, key, "must be an ISO date (2024-01-01) or date-time (2024-01-01T02:00:00)")


def _int(low: int, high: int | None = None) -> Validator:
    def check(c: Checker, node: Node, key: str) -> Any:
        value = c.integer(node, f"x-airflow key '{key}'")
        if value is None:
            return _MISSING
        if value < low:
            return _bad(c, node, key, f"must be at least {low}, not {value}")
        return value if high is None or value <= high else _bad(c, node, key, f"must be at most {high}, not {value}")
    return check


def _bool(c: Checker, node: Node, key: str) -> Any:
    value = c.boolean(node, f"x-airflow key '{key}'")
    return _MISSING if value is None else value


def _choice(*choices: str) -> Validator:
    def check(c: Checker, node: Node, key: str) -> Any:
        value = _string(c, node, key)
        if value in choices:
            return value
        return _bad(c, node, key, f"must be one of {', '.join(choices)}, not '{value}'")
    return check


def _abs_path(nullable: bool) -> Validator:
    def check(c: Checker, node: Node, key: str) -> Any:
        value = _string(c, node, key)
        if value is None and nullable:
            return None
        if isinstance(value, str) and value.startswith("/") and ".." not in value.split("/"):
            return value.rstrip("/") or "/"
        return _bad(c, node, key, f"must be an absolute path without '..', not '{value}'")
    return check


def _k8s_name(nullable: bool) -> Validator:
    def check(c: Checker, node: Node, key: str) -> Any:
        value = _string(c, node, key)
        if (value is None and nullable) or (isinstance(value, str) and K8S_NAME.fullmatch(value)):
            return value
        return _bad(c, node, key, f"must be a Kubernetes name (lower-case letters, digits, '-'), "
                    f"not '{value}'")
    return check


def _tags(c: Checker, node: Node, key: str) -> Any:
    items = [c.string(item, f"x-airflow key '{key}' item") for item in c.sequence(node, f"x-airflow key '{key}'")]
    return tuple(item for item in items if item) if None not in items else _MISSING


_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(c: Checker, node: Node, key: str) -> Any:
    """``90d``, ``12h``, ``30m``, ``45s`` -> seconds; null: keep forever."""
    if is_null(node):
        return None
    value = _string(c, node, key)
    found = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or int(found.group(1)) == 0:
        return _bad(c, node, key, f"must be a duration like 30d, 12h, 30m or 45s (or null: keep forever), not "
                                  f"'{value}'")
    return int(found.group(1)) * _UNIT[found.group(2)]


def _image(c: Checker, node: Node, key: str) -> Any:
    value = _string(c, node, key)
    if isinstance(value, str) and valid_image(value):
        return value
    return _bad(c, node, key, f"must be an image name without tag, not '{value}'")


def _optional_int(low: int) -> Validator:
    positive = _int(low)

    def check(c: Checker, node: Node, key: str) -> Any:
        return None if is_null(node) else positive(c, node, key)
    return check


MAX_STUDIES = 10_000  # per run: each study is a branch of mapped tasks in one DAG run
_REQUESTS: dict[str, Any] = {"cpu": _int(1), "memory": _int(1), "gpu": _int(0)}
Schema = dict[str, Union[Validator, "Schema"]]
SCHEMA: Schema = {
    "schedule": _schedule, "start_date": _start_date, "catchup": _bool, "max_active_runs": _int(1),
    "tags": _tags, "owner": _string, "retries": _int(0), "retry_delay": _int(0),
    "timeout": _int(1), "run_timeout": _optional_int(1), "parameters": _parameter_rules,
    "backend": _choice("docker", "kubernetes"), "namespace": _k8s_name(False), "allow_host_paths": _bool,
    "startup_timeout": _optional_int(1), "schedule_timeout": _optional_int(1), "gpu_wait": _optional_int(0),
    "payload": {"input": _abs_path(True), "output_root": _abs_path(False), "claim": _k8s_name(True)},
    "services": {"idle_ttl": _int(60), "start_timeout": _int(1), "data_dir": _abs_path(False)},
    "batch": {"inbox": _abs_path(True), "quiet_seconds": _int(0, 86_400), "max_studies": _int(1, MAX_STUDIES)},
    "resources": _REQUESTS,
    "retention": {"outputs": _duration, "studies": _duration},
    "models": {"image": _image, "tag": _string, "repository": _abs_path(False), "requests": _REQUESTS},
}


def parse_airflow_block(checker: Checker, node: Node, *, prefix: str = "", schema: Schema = SCHEMA,
                        what: str = "the x-airflow block") -> dict[str, Any]:
    """Validate an ``x-airflow``-shaped mapping into flat dotted keys (V9, V11, V33)."""
    fields = checker.mapping(node, what, schema)
    found: dict[str, Any] = {}
    for key, (_, value) in (fields or {}).items():
        rule = schema[key]
        dotted = prefix + key
        if isinstance(rule, dict):
            if not is_null(value):
                found.update(parse_airflow_block(checker, value, prefix=dotted + ".", schema=rule,
                                                 what=f"x-airflow block '{dotted}'"))
            continue
        result = rule(checker, value, dotted)
        if result is not _MISSING:
            found[dotted] = result
    return found


def load_defaults_file(folder: str | Path) -> dict[str, Any]:
    """Read ``clara-defaults.yaml`` in ``folder`` if present; raises SpecError listing its problems."""
    path = Path(folder) / DEFAULTS_FILE
    if not path.is_file():
        return {}
    node = read_document(str(path), path.read_bytes())
    checker = Checker(str(path))
    found = parse_airflow_block(checker, node, what=DEFAULTS_FILE)
    if checker.problems:
        raise SpecError(checker.problems)
    return found


def _config_names() -> dict[str, str]:
    """``[clara]`` option names: every dotted key with '_' for '.', plus unambiguous leaf names."""
    names = {key.replace(".", "_"): key for key in BUILTIN}
    leaves: dict[str, list[str]] = {}
    for key in BUILTIN:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    for leaf, keys in leaves.items():
        if len(keys) == 1 and leaf not in ("input", "claim", "image", "tag", "repository"):
            names.setdefault(leaf, keys[0])
    names.update({"service_idle_ttl": "services.idle_ttl", "service_start_timeout": "services.start_timeout",
                  "payload_claim": "payload.claim", "payload_input": "payload.input"})
    return names


CONFIG_NAMES = _config_names()


def parse_config(options: Mapping[str, str]) -> tuple[dict[str, Any], Deployment]:
    """Parse Airflow's ``[clara]`` options (strings) into (flat pipeline settings, typed deployment options).

    :raises ClaraAirflowError: listing every bad option, each with its value and what is allowed.
    """
    settings: dict[str, Any] = {}
    problems = []
    for option, raw in options.items():
        name = option.lower()
        if name in DEPLOYMENT_OPTIONS:
            continue
        key = CONFIG_NAMES.get(name)
        if key is None:
            problems.append(f"[clara] {option}: unknown option{hint(name, [*CONFIG_NAMES, *DEPLOYMENT_OPTIONS])}")
            continue
        try:
            settings.update(_parse_config_value(option, key, raw))
        except ClaraAirflowError as exc:
            problems.append(str(exc))
    found, bad = parse_deployment(options)
    problems += bad
    if problems:
        raise ClaraAirflowError("\n".join(problems))
    return settings, found


def _parse_config_value(option: str, key: str, raw: str) -> dict[str, Any]:
    checker = Checker(f"[clara] {option}")
    node: Node = yaml.compose(raw or "~", Loader=yaml.SafeLoader) or yaml.ScalarNode(NULL, "")  # 300 is an int
    parts = key.split(".")
    for part in reversed(parts):
        node = MappingNode("tag:yaml.org,2002:map", [(yaml.ScalarNode("tag:yaml.org,2002:str", part), node)])
    found = parse_airflow_block(checker, node)
    if checker.problems:
        raise ClaraAirflowError(f"[clara] {option} = {raw!r}: {checker.problems[0].message}")
    return found


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge flat settings; earlier layers win, BUILTIN fills the rest."""
    merged = dict(BUILTIN)
    for layer in reversed(layers):
        merged.update(layer)
    return merged


def pipeline_settings(*layers: Mapping[str, Any]) -> PipelineSettings:
    """The typed settings of merged flat layers (earlier layers win)."""
    return PipelineSettings.from_flat(merge_settings(*layers))


def environ_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``[clara]`` options given as ``AIRFLOW__CLARA__<OPTION>`` environment variables."""
    import os

    prefix = "AIRFLOW__CLARA__"
    env = os.environ if environ is None else environ
    return {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}


def deployment_settings(folder: str | Path, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``clara-defaults.yaml`` of ``folder`` over ``[clara]`` options (default: the environment)."""
    config, _ = parse_config(environ_options() if options is None else options)
    return {**config, **load_defaults_file(folder)}
