"""What the services page shows for a record, cell by cell, and what its two actions answer.

test_page.py proves hostile records run no script; these tests pin the page an operator reads: which
value lands in which column, the placeholders for missing values, the state colour, the JSON block
the script reads, and the status codes of the log and stop helpers behind the plugin's routes.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest

from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services import page
from clara_airflow.services.page import render_page

HEADERS = ["service", "identity", "backend", "state", "connections", "started", "last used",
           "runs holding leases", "pipelines", ""]


class _Table(HTMLParser):
    """The page as an operator reads it: text of each cell, with <br> as a line break, and the cells' classes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.classes: list[list[str | None]] = []
        self.heads: list[str] = []
        self.outside: list[str] = []  # text outside any cell of the table
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._cell: list[str] | None = None
        self._script: dict[str, str | None] | None = None
        self._head = False
        self.style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
            self.classes.append([])
        elif tag in ("td", "th"):
            self._cell, self._head = [], tag == "th"
            if tag == "td":
                self.classes[-1].append(dict(attrs).get("class"))
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "script":
            self._script = dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            (self.heads if self._head else self.rows[-1]).append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts.append((self._script, data))
            self._script = None
        elif self._cell is not None:
            self._cell.append(data)
        elif self.lasttag == "style":
            self.style = data
        elif data.strip():
            self.outside.append(data.strip())


def read(rows: list[dict[str, Any]]) -> _Table:
    table = _Table()
    table.feed(render_page(rows))
    table.rows = [r for r in table.rows if r]
    table.classes = [c for c in table.classes if c]
    return table


FULL = {"id": "0123456789ab", "names": ["triton", "trtis"], "image": "nvcr.io/triton", "tag": "21.08",
        "backend": "docker", "state": "running", "identity": {"command": ["tritonserver", "--strict=false"]},
        "connections": {"NV_HOST": "clara-svc-0123456789ab:8000", "NV_GRPC": "clara-svc-0123456789ab:8001"},
        "started_at": "2026-12-06T10:00:00+00:00", "last_used": "2026-12-06T11:00:00+00:00",
        "pipelines": ["ct-organ-triage", "liver"],
        "leases": [{"dag_id": "ct-organ-triage", "run_id": "manual__1"}, {"dag_id": "liver", "run_id": "r2"}]}


def test_each_value_of_a_record_lands_in_its_column() -> None:
    table = read([FULL])
    assert table.heads == HEADERS
    assert table.rows == [[
        "clara-svc-0123456789ab\ntriton, trtis",
        "nvcr.io/triton:21.08\ntritonserver --strict=false",
        "docker", "running",
        "NV_HOST=clara-svc-0123456789ab:8000\nNV_GRPC=clara-svc-0123456789ab:8001",
        "2026-12-06T10:00:00+00:00", "2026-12-06T11:00:00+00:00",
        "ct-organ-triage / manual__1\nliver / r2",
        "ct-organ-triage, liver",
        "Logs Stop",
    ]]
    assert table.classes == [[None, None, None, "state-running", None, None, "last-used", "leases", None, None]]


def test_a_services_gpus_show_under_its_backend_escaped() -> None:
    assert read([{**FULL, "devices": ["0", "GPU-8f2c<b>"]}]).rows[0][2] == "docker\nGPU 0, GPU-8f2c<b>"
    assert "<b>" not in render_page([{**FULL, "devices": ["<b>"]}])


def test_missing_values_show_placeholders_and_a_stopped_service_is_red() -> None:
    table = read([{"id": "0123456789ab", "state": "exited"}])
    assert table.rows == [["clara-svc-0123456789ab\n—", "—:—\n(image default)", "—", "exited", "—", "—", "—",
                           "none", "—", "Logs Stop"]]
    assert table.classes[0][3] == "state-other"
    assert read([{"id": "0123456789ab"}]).rows[0][3] == "?"  # a record without a state


def test_an_empty_string_is_a_missing_value_but_zero_is_shown() -> None:
    table = read([{"id": "0123456789ab", "image": "", "tag": 0, "backend": None}])
    assert table.rows[0][1].startswith("—:0\n") and table.rows[0][2] == "—"


def test_the_buttons_carry_the_service_and_how_many_runs_hold_it() -> None:
    html_text = render_page([FULL])
    assert ('<button class="logs" data-action="logs" data-sid="0123456789ab">Logs</button> '
            '<button class="stop" data-action="stop" data-sid="0123456789ab" data-leases="2">Stop</button>'
            '</td></tr>') in html_text
    assert '<tr data-service="0123456789ab">' in html_text


def test_no_services_is_said_in_one_row_across_the_table() -> None:
    html_text = render_page([])
    assert '<tbody><tr><td colspan="10">No services recorded yet.</td></tr></tbody>' in html_text
    assert read([]).rows == [["No services recorded yet."]]


def test_the_page_frame_title_explanation_and_data_block() -> None:
    table = read([FULL])
    assert html_frame_ok(render_page([FULL]))
    assert table.outside == ["Clara services", "Clara services",
                             "Shared services started by Clara pipelines, one per identity (image, tag, command). "
                             "They outlive runs; the", "clara_service_reaper",
                             "DAG stops the idle ones."]
    (static_attrs, static), (data_attrs, data) = table.scripts
    assert static_attrs == {} and "addEventListener('click'" in static
    assert data_attrs == {"type": "application/json", "id": "data"}
    assert ".state-running{color:#2e7d32" in table.style and ".state-other{color:#b71c1c" in table.style
    assert json.loads(data) == [FULL]


def html_frame_ok(text: str) -> bool:
    return (text.startswith('<!doctype html><html><head><meta charset="utf-8"><title>Clara services</title><style>')
            and text.endswith('<h2 id="logs-title"></h2><pre id="logs"></pre><script type="application/json" '
                              f'id="data">{page._json_block([FULL])}</script></body></html>')
            and "</style><script>" in text and "</script></head><body><h1>Clara services</h1>" in text
            and '<p id="message" role="status"></p><table><thead><tr><th>service</th>' in text
            and ".state-running{" in text and ".state-other{" in text)


def test_the_data_block_escapes_exactly_what_could_end_a_script_and_reads_back_whole() -> None:
    rows = [{"id": "a", "note": "</script><b>&amp; 'q' \"d\""}]
    block = page._json_block(rows)
    assert "<" not in block and ">" not in block and "&" not in block
    assert "\\u003c/script\\u003e\\u003cb\\u003e\\u0026amp;" in block
    assert json.loads(block) == rows


def test_logs_of_a_recorded_service_come_from_its_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []

    class Manager:
        def logs(self, sid: str, lines: int) -> str:
            asked.append((sid, lines))
            return "" if sid == "bbbbbbbbbbbb" else f"{lines} lines of {sid}"

    rows = [{"id": "aaaaaaaaaaaa"}, {"id": "bbbbbbbbbbbb"}, {"id": "cccccccccccc"}]
    monkeypatch.setattr(page, "list_services", lambda: rows)
    monkeypatch.setattr(page, "manager_for", lambda row: None if row["id"] == "cccccccccccc" else Manager())
    assert page.service_logs("aaaaaaaaaaaa", 50) == "50 lines of aaaaaaaaaaaa"
    assert page.service_logs("bbbbbbbbbbbb", 5) == "(no log lines)"
    assert page.service_logs("cccccccccccc", 5) == "(no log lines)"  # its backend is not configured here
    assert page.service_logs("dddddddddddd", 5) == "no service dddddddddddd"
    assert asked == [("aaaaaaaaaaaa", 50), ("bbbbbbbbbbbb", 5)]


@pytest.mark.parametrize(("error", "status"), [
    ("clara-svc-a is in use by 2 running DAG run(s); pass force to stop it anyway", 409),
    ("no service matches 'x'", 404),
])
def test_stop_answers_200_409_or_404_with_the_reason(monkeypatch: pytest.MonkeyPatch, error: str,
                                                       status: int) -> None:
    def refuse(sid: str, *, force: bool) -> str:
        raise ClaraAirflowError(error)

    monkeypatch.setattr(page, "stop_service", lambda sid, *, force: f"stopped clara-svc-{sid} (force={force})")
    assert page.stop("a", force=True) == (200, {"detail": "stopped clara-svc-a (force=True)"})
    monkeypatch.setattr(page, "stop_service", refuse)
    assert page.stop("a", force=False) == (status, {"detail": error})


def test_several_services_are_one_row_each_in_the_order_given() -> None:
    second = {**FULL, "id": "bbbbbbbbbbbb", "state": "exited"}
    html_text = render_page([FULL, second])
    assert '</button></td></tr><tr data-service="bbbbbbbbbbbb">' in html_text
    assert [row[0].split("\n")[0] for row in read([FULL, second]).rows] == ["clara-svc-0123456789ab",
                                                                              "clara-svc-bbbbbbbbbbbb"]
