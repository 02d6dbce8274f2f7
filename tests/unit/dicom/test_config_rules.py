"""``dicom.yaml`` as the receiver reads it: every default, every bound (each side of it), the names that
become folders, and the positioned problems ``dicom check`` reports together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from clara_airflow.dicom.config import (
    DicomConfig,
    Route,
    configured_destinations,
    folder_aet,
    load_config,
    valid_aet,
)
from clara_airflow.errors import SpecError

MINIMAL: dict[str, Any] = {"inbox": "/data/in", "ae_titles": {"CT_AI": {"pipelines": ["p1"]}}}


def test_every_default() -> None:
    cfg = DicomConfig.model_validate(MINIMAL)
    listen = cfg.listen
    assert (listen.host, listen.port, listen.ae_title) == ("0.0.0.0", 11112, "CLARA")
    assert (listen.status_port, listen.status_host, listen.status_token_env) == (None, "127.0.0.1",
                                                                                 "CLARA_DICOM_STATUS_TOKEN")
    assert (cfg.airflow.url, cfg.airflow.username_env, cfg.airflow.password_env) == (
        "http://localhost:8080", "CLARA_AIRFLOW_USER", "CLARA_AIRFLOW_PASSWORD")
    assert (cfg.reject_unknown_sources, cfg.min_free_disk_mb, cfg.max_associations, cfg.max_pdu,
            cfg.max_instance_mb) == (True, 5120, 50, 4_194_304, 4096)
    assert (cfg.sources, cfg.destinations) == ([], {})
    route = cfg.ae_titles["CT_AI"]
    assert (route.group_by, route.timeout, route.priority, route.first_match, route.rules, route.default) == (
        "study", 5.0, "normal", False, [], [])


def refusal(data: Any, model: Any = DicomConfig) -> str:
    """The one message pydantic gives for ``data``, without its "Value error, " prefix."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    (error,) = info.value.errors()
    return str(error["msg"]).removeprefix("Value error, ")


def _with(path: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(MINIMAL))
    keys = path.split(".")
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return data


BOUNDS = [
    ("listen.port", 0, False), ("listen.port", 1, True), ("listen.port", 65535, True), ("listen.port", 65536, False),
    ("listen.status_port", -1, False), ("listen.status_port", 0, True), ("listen.status_port", 65535, True),
    ("listen.status_port", 65536, False),
    ("listen.status_token_env", "TOKEN_1", True), ("listen.status_token_env", "1TOKEN", False),
    ("listen.status_token_env", "T" * 128, True), ("listen.status_token_env", "T" * 129, False),
    ("min_free_disk_mb", -1, False), ("min_free_disk_mb", 0, True),
    ("max_associations", 0, False), ("max_associations", 1, True), ("max_associations", 1000, True),
    ("max_associations", 1001, False),
    ("max_pdu", -1, False), ("max_pdu", 0, True), ("max_pdu", 2**31 - 1, True), ("max_pdu", 2**31, False),
    ("max_instance_mb", 0, False), ("max_instance_mb", 1, True),
    ("ae_titles.CT_AI.timeout", 0, False), ("ae_titles.CT_AI.timeout", 0.01, True),
    ("ae_titles.CT_AI.timeout", 3600, True), ("ae_titles.CT_AI.timeout", 3600.5, False),
    ("ae_titles.CT_AI.group_by", "series", True), ("ae_titles.CT_AI.group_by", "patient", False),
    ("ae_titles.CT_AI.priority", "immediate", True), ("ae_titles.CT_AI.priority", "urgent", False),
    ("destinations", {"PACS": {"host": "h", "port": 0, "ae_title": "P"}}, False),
    ("destinations", {"PACS": {"host": "h", "port": 1, "ae_title": "P"}}, True),
    ("destinations", {"PACS": {"host": "h", "port": 65535, "ae_title": "P"}}, True),
    ("destinations", {"PACS": {"host": "h", "port": 65536, "ae_title": "P"}}, False),
    ("destinations", {"PACS": {"host": "h", "port": 104, "ae_title": "A\\B"}}, False),
    ("sources", [{"ae_title": "X" * 17, "host": "h"}], False),
    ("listen.ae_title", "X" * 16, True), ("listen.ae_title", "X" * 17, False),
    ("ae_titles.CT_AI.pipelines", ["p" * 250], True), ("ae_titles.CT_AI.pipelines", ["p" * 251], False),
    ("ae_titles.CT_AI.pipelines", ["a b"], False), ("ae_titles.CT_AI.pipelines", ["a.b-c_1"], True),
    ("listen.unknown", 1, False),
]


def test_the_configuration_cannot_be_changed_once_read() -> None:
    cfg = DicomConfig.model_validate(MINIMAL)
    for target, field in ((cfg, "inbox"), (cfg.listen, "port"), (cfg.ae_titles["CT_AI"], "timeout")):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(target, field, 1)


@pytest.mark.parametrize(("path", "value", "ok"), BOUNDS, ids=[f"{p}={str(v)[:20]}" for p, v, _ in BOUNDS])
def test_each_bound_on_each_side(path: str, value: Any, ok: bool) -> None:
    data = _with(path, value)
    if ok:
        DicomConfig.model_validate(data)
    else:
        with pytest.raises(ValidationError):
            DicomConfig.model_validate(data)


@pytest.mark.parametrize(("url", "kept"), [("https://airflow.hospital/api/", "https://airflow.hospital/api"),
                                           ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
                                           ("ftp://airflow", None), ("http://", None), ("http://a b", None),
                                           ("airflow:8080", None)])
def test_the_airflow_url_is_http_without_a_trailing_slash(url: str, kept: str | None) -> None:
    if kept is None:
        assert refusal(_with("airflow.url", url)) == f"{url!r} is not an http(s) URL of the Airflow API server"
    else:
        assert DicomConfig.model_validate(_with("airflow.url", url)).airflow.url == kept


@pytest.mark.parametrize(("inbox", "kept"), [("/data/in/", "/data/in"), ("/", "/"), ("data/in", None),
                                             ("/data/../etc", None), ("/data/..", None)])
def test_the_inbox_is_absolute_and_never_climbs(inbox: str, kept: str | None) -> None:
    if kept is None:
        assert refusal(_with("inbox", inbox)) == f"{inbox!r} must be an absolute path without '..'"
    else:
        assert DicomConfig.model_validate(_with("inbox", inbox)).inbox == kept


def test_ae_titles_follow_dicom_and_folder_rules() -> None:
    assert valid_aet(" CT_AI ") == "CT_AI" and valid_aet("A" * 16) == "A" * 16
    for bad in ("", "   ", "A" * 17, "A\\B", "CT\x07", "CTÄ"):
        with pytest.raises(ValueError) as info:
            valid_aet(bad)
        assert str(info.value) == f"{bad!r} is not an AE title (1-16 printable ASCII characters, no backslash, not blank)"
    assert folder_aet("CT.AI") == "CT.AI"
    for bad in ("CT/AI", ".", ".."):
        with pytest.raises(ValueError) as info:
            folder_aet(bad)
        assert str(info.value) == (f"{bad!r} cannot be a routed AE title: it becomes a folder name, so it may not "
                                   "contain '/' or be '.' or '..'")
    cfg = DicomConfig.model_validate({**MINIMAL, "ae_titles": {" CT_AI ": {"pipelines": ["p1"]}}})
    assert list(cfg.ae_titles) == ["CT_AI"], "the called AE title is stripped as the folder name"


def test_rules_name_dicom_keywords_and_regular_expressions() -> None:
    def rule(**changes: Any) -> dict[str, Any]:
        return _with("ae_titles.CT_AI", {"rules": [{"when": {"Modality": "CT"}, "pipelines": ["p1"], **changes}]})

    DicomConfig.model_validate(rule())
    assert refusal(rule(when={"Modalty": "CT"})) == "'Modalty' is not a DICOM keyword; did you mean Modality?"
    assert refusal(rule(when={"qqqqqqqqqqqq": "CT"})) == ("'qqqqqqqqqqqq' is not a DICOM keyword (keywords are "
                                                          "CamelCase, like Modality or BodyPartExamined)")
    assert refusal(rule(when={"ReferencedSeriesSequence": "x"})) == (
        "'ReferencedSeriesSequence' is a sequence; a rule matches the value of a plain element")
    assert refusal(rule(when={"Modality": "("})) == ("'(' is not a regular expression (missing ), unterminated "
                                                     "subpattern at position 0)")
    for empty in ({"when": {}}, {"pipelines": []}):
        with pytest.raises(ValidationError):
            DicomConfig.model_validate(rule(**empty))
    assert DicomConfig.model_validate(rule(priority="higher")).ae_titles["CT_AI"].rules[0].priority == "higher"
    assert DicomConfig.model_validate(rule()).ae_titles["CT_AI"].rules[0].priority is None


def test_a_route_must_start_something_and_lists_its_pipelines_once_in_order() -> None:
    assert refusal({"default": ["p1"]}, Route) == ("routes no pipeline: give it pipelines (every group) or rules "
                                                  "(groups by their tags)")
    route = Route.model_validate({"pipelines": ["a", "b"], "rules": [{"when": {"Modality": "CT"}, "pipelines": ["c", "a"]},
                                                                    {"when": {"Modality": "MR"}, "pipelines": ["d"]}],
                                  "default": ["e", "b"]})
    assert route.every_pipeline() == ["a", "b", "c", "d", "e"]
    assert Route.model_validate({"rules": [{"when": {"Modality": "CT"}, "pipelines": ["c"]}]}).every_pipeline() == ["c"]


def test_every_problem_is_reported_together_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dicom.yaml"
    path.write_text("listen:\n  port: 0\n  colour: blue\nae_titles:\n  CT_AI:\n    timeout: 9999\n    pipelines: [p1]\n"
                    "max_pdu: -5\n")
    with pytest.raises(SpecError) as info:
        load_config(path)
    found = {(p.line, p.col, p.message) for p in info.value.problems}
    assert (2, 3, "listen.port: Input should be greater than or equal to 1") in found
    assert (3, 3, "listen.colour: unknown key 'colour'; see docs/dicom.md for the keys") in found
    assert (6, 5, "ae_titles.CT_AI.timeout: Input should be less than or equal to 3600") in found
    assert (8, 1, "max_pdu: Input should be greater than or equal to 0") in found
    assert (1, 1, "inbox: 'inbox' is required") in found
    assert len(found) == 5 and all(p.path == str(path) and p.rule == "D1" for p in info.value.problems)


def problems_in(tmp_path: Path, text: str) -> list[Any]:
    """What ``load_config`` refuses in a dicom.yaml holding ``text``."""
    path = tmp_path / "dicom.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_config(path)
    return list(info.value.problems)


@pytest.mark.parametrize("text", ["- a\n- b\n", "[1, 2]\n", "just text\n"])
def test_a_file_that_is_no_mapping_is_one_problem_at_its_start(tmp_path: Path, text: str) -> None:
    (problem,) = problems_in(tmp_path, text)
    assert (problem.line, problem.col, problem.message, problem.rule) == (
        1, 1, "the DICOM configuration must be a mapping (listen:, inbox:, ...)", "D1")


def test_destinations_are_read_from_the_configured_file(tmp_path: Path) -> None:
    assert configured_destinations(None) is None and configured_destinations("") is None
    path = tmp_path / "dicom.yaml"
    path.write_text(json.dumps({**MINIMAL, "destinations": {"PACS": {"host": "h", "port": 104, "ae_title": "P"},
                                                            "ARCHIVE": {"host": "a", "port": 11112, "ae_title": "A"}}}))
    assert configured_destinations(str(path)) == ("PACS", "ARCHIVE")


def test_only_trailing_slashes_are_dropped() -> None:
    assert DicomConfig.model_validate(_with("airflow.url", "http://AIRFLOWX/")).airflow.url == "http://AIRFLOWX"
    assert DicomConfig.model_validate(_with("inbox", "/data/X/")).inbox == "/data/X"


def test_a_top_level_problem_and_a_missing_ae_titles_are_named(tmp_path: Path) -> None:
    assert sorted((p.line, p.col, p.message) for p in problems_in(tmp_path, "inbox: /data/in\ncolour: blue\n")) == [
        (1, 1, "ae_titles: 'ae_titles' is required"),
        (2, 1, "colour: unknown key 'colour'; see docs/dicom.md for the keys")]


def test_the_command_line_reads_destinations_from_airflows_environment(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from clara_airflow.dicom.config import environment_destinations

    path = tmp_path / "dicom.yaml"
    path.write_text(json.dumps({**MINIMAL, "destinations": {"PACS": {"host": "h", "port": 104, "ae_title": "P"}}}))
    monkeypatch.delenv("AIRFLOW__CLARA__DICOM_CONFIG", raising=False)
    assert environment_destinations() is None
    monkeypatch.setenv("AIRFLOW__CLARA__DICOM_CONFIG", str(path))
    assert environment_destinations() == ("PACS",)
