"""Routing rules on DICOM tags (clara_airflow.dicom.routing and the receiver's completion): matching,
order, first_match, default, unrouted groups, and the ``dicom check`` errors at their lines. Real files
written by pydicom, read back by the receiver's own code."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clara_airflow.dicom.config import DicomConfig, Route, load_config
from clara_airflow.dicom.routing import decide
from clara_airflow.errors import SpecError
from tests.dicom_data import ct_series

UID = "1.2.826.0.1.3680043.8.498.1"


def route(**fields: Any) -> Route:
    return Route.model_validate(fields)


RULES = [{"when": {"Modality": "CT", "BodyPartExamined": "CHEST|LUNG"}, "pipelines": ["ct-triage"],
          "priority": "higher"},
         {"when": {"Modality": "MR"}, "pipelines": ["mr-brain"]},
         {"when": {"Modality": "CT|MR"}, "pipelines": ["archive-check", "ct-triage"]}]


def group(folder: Path, *series: dict[str, Any]) -> Path:
    for n, spec in enumerate(series):
        spec = dict(spec)
        ct_series(folder, study=UID, series=f"{UID}.{n}", count=spec.pop("count", 2), modality=spec.pop("modality"),
                  tags=spec)
        for path in folder.glob("0*.dcm"):  # names of one series never collide with the next one's
            path.rename(folder / f"s{n}-{path.name}")
    return folder


def test_every_matching_rule_starts_its_pipelines_in_order_once_each(tmp_path: Path) -> None:
    chest = group(tmp_path / "chest", {"modality": "CT", "BodyPartExamined": "CHEST"})
    found = decide(route(rules=RULES, priority="lower"), chest)
    assert found.runs == (("ct-triage", "higher"), ("archive-check", "lower"))
    assert found.rules == (0, 2)
    assert decide(route(rules=[{"when": {"BodyPartExamined": "ches?t"}, "pipelines": ["a"]}]), chest).rules == (0,)


def test_first_match_stops_at_the_first_rule_that_matches(tmp_path: Path) -> None:
    chest = group(tmp_path / "chest", {"modality": "CT", "BodyPartExamined": "LUNG"})
    assert decide(route(rules=RULES, first_match=True), chest).runs == (("ct-triage", "higher"),)
    head = group(tmp_path / "head", {"modality": "CT", "BodyPartExamined": "HEAD"})
    assert decide(route(rules=RULES, first_match=True), head).runs == (("archive-check", "normal"),
                                                                       ("ct-triage", "normal"))


def test_a_rule_matches_when_one_instance_matches_all_its_conditions(tmp_path: Path) -> None:
    # the CT series is of the abdomen, the chest series is MR: no single instance is CT *and* chest
    mixed = group(tmp_path / "mixed", {"modality": "CT", "BodyPartExamined": "ABDOMEN"},
                  {"modality": "MR", "BodyPartExamined": "CHEST"})
    assert decide(route(rules=RULES[:1]), mixed).runs == ()
    assert decide(route(rules=RULES[:2]), mixed).runs == (("mr-brain", "normal"),)
    each = [{"when": {"Modality": "CT"}, "pipelines": ["ct"]}, {"when": {"Modality": "MR"}, "pipelines": ["mr"]}]
    assert decide(route(rules=each), mixed).runs == (("ct", "normal"), ("mr", "normal"))  # read on after a match
    # first_match is the first rule in order, even when a later rule matched an earlier instance
    assert decide(route(rules=each[::-1], first_match=True), mixed).runs == (("mr", "normal"),)


def test_full_match_multi_values_and_missing_elements(tmp_path: Path) -> None:
    typed = group(tmp_path / "typed", {"modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]})
    assert decide(route(rules=[{"when": {"ImageType": "axial"}, "pipelines": ["a"]}]), typed).runs == (("a", "normal"),)
    assert decide(route(rules=[{"when": {"Modality": "C"}, "pipelines": ["a"]}]), typed).runs == ()  # not a prefix
    assert decide(route(rules=[{"when": {"BodyPartExamined": ""}, "pipelines": ["none"]}]), typed).runs == (
        ("none", "normal"),)  # a missing element reads as the empty string


def test_the_default_catches_what_no_rule_matches_and_pipelines_start_for_every_group(tmp_path: Path) -> None:
    us = group(tmp_path / "us", {"modality": "US"})
    assert decide(route(rules=RULES, default=["fallback"]), us).runs == (("fallback", "normal"),)
    assert decide(route(rules=RULES), us).runs == ()
    assert decide(route(pipelines=["always"], rules=RULES), us).runs == (("always", "normal"),)
    assert decide(route(pipelines=["always"]), us).runs == (("always", "normal"),)


def test_reading_stops_once_the_answer_cannot_change(tmp_path: Path) -> None:
    ct = group(tmp_path / "ct", {"modality": "CT", "count": 20})
    assert decide(route(rules=[{"when": {"Modality": "CT"}, "pipelines": ["a"]}]), ct).read == 1
    assert decide(route(rules=RULES[1:2]), ct).read == 20  # no MR: every instance was looked at


def _receiver(tmp_path: Path, ae: dict[str, Any]) -> Any:
    from clara_airflow.dicom.receiver import Receiver

    class Triggers:
        def __init__(self) -> None:
            self.added: list[tuple[str, str, str]] = []

        def add(self, pipeline: str, run_id: str, conf: dict[str, str], priority: str) -> None:
            self.added.append((pipeline, run_id, priority))

        def wake(self) -> None:
            pass

    config = DicomConfig.model_validate({"inbox": str(tmp_path / "inbox"), "ae_titles": {"CLARA_AI": ae}})
    (tmp_path / "inbox").mkdir()
    return Receiver(config, Triggers())  # type: ignore[arg-type]


def test_an_unrouted_group_is_kept_listed_logged_and_starts_nothing(tmp_path: Path, caplog: Any) -> None:
    from clara_airflow.dicom.status import status

    rx = _receiver(tmp_path, {"rules": RULES})
    group(rx.folders.gathering / "CLARA_AI" / UID, {"modality": "US"})
    with caplog.at_level(logging.INFO, logger="clara_airflow.dicom"):
        rx.complete("CLARA_AI", UID)
    assert rx.triggers.added == [] and rx.counts == {"unrouted": 1}  # clara_dicom_groups_unrouted_total
    assert (rx.inbox / ".clara-receiver" / "unrouted" / "CLARA_AI" / UID / "s0-0000.dcm").is_file()  # docs/dicom.md
    assert not (rx.inbox / "CLARA_AI" / UID).exists()
    (entry,) = status(rx.config, airflow=False)["groups"]
    assert (entry["state"], entry["uid"], entry["instances"]) == ("unrouted", UID, 2)
    assert [r.getMessage() for r in caplog.records if "matches no rule" in r.getMessage()] == [
        f"group {UID} of CLARA_AI matches no rule and CLARA_AI has no default: kept in "
        f"{rx.folders.unrouted_root / 'CLARA_AI' / UID}, no run started (routing {r.args[4]:.1f} ms)"
        for r in caplog.records if "matches no rule" in r.getMessage()]
    group(rx.folders.gathering / "CLARA_AI" / "1.2.3.5", {"modality": "US"})
    rx.complete("CLARA_AI", "1.2.3.5")
    assert rx.counts == {"unrouted": 2}


def test_a_routed_group_starts_the_rules_runs_with_their_priorities(tmp_path: Path, caplog: Any) -> None:
    rx = _receiver(tmp_path, {"rules": RULES, "priority": "lower"})
    group(rx.folders.gathering / "CLARA_AI" / UID, {"modality": "MR"})
    began = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="clara_airflow.dicom"):
        rx.complete("CLARA_AI", UID)
    assert time.perf_counter() - began < 5
    assert [(p, prio) for p, _, prio in rx.triggers.added] == [("mr-brain", "lower"), ("archive-check", "lower"),
                                                               ("ct-triage", "lower")]
    assert (rx.inbox / "CLARA_AI" / UID / ".complete").is_file() and rx.counts == {"completed": 1, "routed": 1}
    routing_ms = completed_line(rx, caplog, " rules=2,3")  # reading the files, in milliseconds
    assert 0 < routing_ms <= (time.perf_counter() - began) * 1000


def completed_line(rx: Any, caplog: Any, rules: str) -> float:
    """Checks the group's "group complete" log line, whole; returns its routing time."""
    import re

    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("group complete")]
    runs = ",".join(run_id for _, run_id, _ in rx.triggers.added)
    found = re.fullmatch(rf"group complete: called=CLARA_AI study={UID} instances=\d+ folder={rx.inbox}/CLARA_AI/{UID} "
                         rf"runs={runs}{rules} routing_ms=(\d+\.\d)", line)
    assert found, line
    return float(found.group(1))


@pytest.mark.parametrize(("ae", "rules"), [({"rules": RULES, "default": ["fallback"]}, " rules=default"),
                                           ({"pipelines": ["every"]}, "")])
def test_the_complete_line_says_the_default_caught_it_or_names_no_rule(tmp_path: Path, caplog: Any,
                                                                       ae: dict[str, Any], rules: str) -> None:
    rx = _receiver(tmp_path, ae)
    group(rx.folders.gathering / "CLARA_AI" / UID, {"modality": "US"})
    with caplog.at_level(logging.INFO, logger="clara_airflow.dicom"):
        rx.complete("CLARA_AI", UID)
    completed_line(rx, caplog, rules)
    assert [p for p, _, _ in rx.triggers.added] == ae.get("default", ae.get("pipelines"))


def test_dicom_check_puts_each_rule_problem_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dicom.yaml"
    path.write_text(yaml.safe_dump({"inbox": "/srv/in", "ae_titles": {"A": {"rules": [{
        "when": {"Modalty": "MR", "ReferencedSeriesSequence": "x", "PatientName": "(open"},
        "pipelines": ["ok", "bad name"], "priority": "urgent"}]}, "B": {"group_by": "study"}}}, sort_keys=False))
    with pytest.raises(SpecError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:6:9: ae_titles.A.rules.0.when.Modalty: 'Modalty' is not a DICOM keyword; did you mean Modality?",
        f"{path}:7:9: ae_titles.A.rules.0.when.ReferencedSeriesSequence: 'ReferencedSeriesSequence' is a sequence; "
        "a rule matches the value of a plain element",
        f"{path}:8:9: ae_titles.A.rules.0.when.PatientName: '(open' is not a regular expression (missing ), "
        "unterminated subpattern at position 0)",
        f"{path}:11:9: ae_titles.A.rules.0.pipelines.1: 'bad name' is not a pipeline (DAG) name",
        f"{path}:12:7: ae_titles.A.rules.0.priority: Input should be 'lower', 'normal', 'higher' or 'immediate'",
        f"{path}:13:3: ae_titles.B: routes no pipeline: give it pipelines (every group) or rules (groups by their tags)",
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: a 100 kB ImageComments is longer than LT allows
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_received_group_is_routed_from_the_values_read_at_reception(tmp_path: Path, airflow: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No file is read at completion (reading them would cost ~0.25 ms an instance), and an element far
    behind a 100 kB one is still seen: the reception reads the whole header, not its first 64 KiB."""
    from clara_airflow.dicom import routing
    from clara_airflow.dicom.trigger import run_id_for
    from tests.unit.dicom.test_receiver import Running, config, send, wait_for

    def no_reading(*_: Any) -> Any:
        raise AssertionError("the files were read again at completion")

    cfg = config(tmp_path, airflow, ae_titles={"CLARA_AI": {"timeout": 0.5, "rules": [
        {"when": {"Modality": "CT", "PhotometricInterpretation": "MONOCHROME2"}, "pipelines": ["ct"]},
        {"when": {"Modality": "MR"}, "pipelines": ["mr"]}]}})
    study = "1.2.826.0.1.3680043.8.498.77"
    files = ct_series(tmp_path / "big", study=study, series=f"{study}.1", count=2, size=256,
                      tags={"ImageComments": "x" * 100_000})  # (0020,4000): before (0028,0004)
    monkeypatch.setattr(routing, "instance_values", no_reading)
    running = Running(cfg)
    try:
        assert send(cfg, files, called="CLARA_AI") == [0, 0]
        wait_for(lambda: airflow.runs, 10)
    finally:
        running.close()
    assert set(airflow.runs) == {run_id_for("ct", "CLARA_AI", study)}


def test_a_group_gathered_before_a_restart_is_routed_from_its_files(tmp_path: Path) -> None:
    from clara_airflow.dicom.receiver import Receiver

    first = _receiver(tmp_path, {"rules": RULES})
    group(first.folders.gathering / "CLARA_AI" / UID, {"modality": "MR"})
    again = Receiver(first.config, first.triggers)  # a new process: nothing seen at reception
    again.tick(time.monotonic() + 10)
    assert [p for p, _, _ in first.triggers.added] == ["mr-brain", "archive-check", "ct-triage"]


def test_a_route_without_rules_reads_nothing_and_names_no_rule(tmp_path: Path) -> None:
    import dataclasses

    decision = decide(route(pipelines=["every"]), tmp_path)
    assert (decision.runs, decision.rules, decision.read) == ((("every", "normal"),), (), 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.read = 5  # type: ignore[misc]


def test_an_unreadable_file_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    folder = group(tmp_path / "g", {"modality": "MR", "count": 1})
    (folder / "0-first.dcm").write_bytes(b"not DICOM at all")  # sorted first
    decision = decide(route(rules=RULES[1:2]), folder)
    assert decision.runs == (("mr-brain", "normal"),) and decision.read == 1
