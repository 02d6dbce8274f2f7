"""The services page with hostile records: no record text ever runs as script (HTML and Chromium)."""

from __future__ import annotations

import html
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.services.page import render_page

HOSTILE = [
    "x');alert('xss');('",
    "\"><img src=x onerror=\"window.__xss='attr'\">",
    "</script><script>window.__xss='script'</script>",
    "`${window.__xss='tpl'}`",
]


def rows() -> list[dict[str, Any]]:
    found = []
    for n, text in enumerate(HOSTILE):
        found.append({"id": text, "names": [text], "image": text, "tag": text, "backend": text, "state": text,
                      "identity": {"command": [text]}, "connections": {text: text}, "started_at": text,
                      "last_used": text, "pipelines": [text], "leases": [{"dag_id": text, "run_id": text}],
                      "n": n})
    return found


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_no_record_text_lands_in_script_or_an_event_handler() -> None:
    page = render_page(rows())
    parser = _Tags()
    parser.feed(page)
    assert [t for t, _ in parser.tags if t in ("img", "iframe", "svg")] == []
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")], "no inline event handlers"
    assert sorted({attrs["data-sid"] for t, attrs in parser.tags if t == "button"}) == sorted(HOSTILE)
    scripts = re.findall(r"<script(?: [^>]*)?>(.*?)</script>", page, re.S)
    assert len(scripts) == 2, "the static script and the JSON data block, nothing a record could open"
    assert all(text not in scripts[0] for text in HOSTILE)
    for text in HOSTILE:
        assert f'data-sid="{html.escape(text)}"' in page
        assert "<script>window" not in scripts[1] and "</script>" not in scripts[1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_hostile_records_run_no_script_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "services.html"
    page_file.write_text(render_page(rows()))
    dialogs: list[str] = []
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.route("**/api/services/**", lambda route: route.fulfill(status=200, body="log line",
                                                                        content_type="text/plain"))
            page.goto(page_file.as_uri())
            for button in page.locator("button.logs").all():
                button.click()
            page.locator("button.stop").first.click()  # confirm() opens: a dialog carrying our own text
            page.wait_for_timeout(300)
            assert page.evaluate("window.__xss") is None
            assert page.locator("#logs").text_content() == "log line"
        finally:
            browser.close()
    assert len(dialogs) == 1 and dialogs[0].startswith("clara-svc-x');alert('xss');(' is held by 1 running")
