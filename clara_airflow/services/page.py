"""Data and HTML of the services page (the FastAPI routes live in clara_airflow.plugin)."""

from __future__ import annotations

import html
import json
from typing import Any

from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services.admin import list_services, manager_for, stop_service


def service_logs(sid: str, lines: int) -> str:
    row = next((r for r in list_services() if r["id"] == sid), None)
    if row is None:
        return f"no service {sid}"
    manager = manager_for(row)
    return (manager.logs(sid, lines) if manager else "") or "(no log lines)"


def stop(sid: str, *, force: bool) -> tuple[int, dict[str, Any]]:
    try:
        return 200, {"detail": stop_service(sid, force=force)}
    except ClaraAirflowError as exc:
        text = str(exc)
        return (409 if "in use" in text else 404), {"detail": text}


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.45rem;
text-align:left;vertical-align:top}th{background:#f4f6f4}.state-running{color:#2e7d32;font-weight:600}
.state-other{color:#b71c1c;font-weight:600}code{font-size:.82rem}button{cursor:pointer;padding:.25rem .6rem}
pre:empty{display:none}pre{background:#111;color:#ddd;padding:.8rem;max-height:24rem;overflow:auto;font-size:.8rem}
"""

# The only script of the page: static text. Data reach it through data- attributes, never inside code.
_SCRIPT = """
function post(url) {
  return fetch(url, {method: 'POST', credentials: 'same-origin', headers: {'X-Requested-With': 'clara-airflow'}});
}
async function stopService(button) {
  const sid = button.dataset.sid, leases = Number(button.dataset.leases);
  let force = false;
  if (leases > 0) {
    if (!confirm(`clara-svc-${sid} is held by ${leases} running DAG run(s). Stop it anyway?`)) return;
    force = true;
  } else if (!confirm(`Stop the shared service clara-svc-${sid}? Pipelines start it again when they need it.`)) {
    return;
  }
  const answer = await post(`api/services/${encodeURIComponent(sid)}/stop?force=${force}`);
  const body = await answer.json();
  document.getElementById('message').textContent = answer.ok ? body.detail : `refused: ${body.detail}`;
  if (answer.ok) setTimeout(() => location.reload(), 600);
}
async function showLogs(button) {
  const sid = button.dataset.sid;
  const answer = await fetch(`api/services/${encodeURIComponent(sid)}/logs?lines=200`, {credentials: 'same-origin'});
  document.getElementById('logs-title').textContent = `last log lines of clara-svc-${sid}`;
  document.getElementById('logs').textContent = await answer.text();
}
document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  if (button.dataset.action === 'stop') stopService(button);
  if (button.dataset.action === 'logs') showLogs(button);
});
"""


def _cell(value: Any) -> str:
    return html.escape(str(value)) if value not in (None, "") else "—"


def _row(row: dict[str, Any]) -> str:
    sid = html.escape(row["id"])
    state = str(row.get("state", "?"))
    css = "state-running" if state == "running" else "state-other"
    ident = row.get("identity", {})
    command = " ".join(map(str, ident.get("command") or [])) or "(image default)"
    conns = "<br>".join(f"<code>{html.escape(k)}={html.escape(str(v))}</code>"
                        for k, v in row.get("connections", {}).items()) or "—"
    leases = row.get("leases", [])
    held = "<br>".join(f"{html.escape(x['dag_id'])} / {html.escape(x['run_id'])}" for x in leases) or "none"
    devices = [str(d) for d in row.get("devices") or []]
    gpus = f'<br><span class="gpus">GPU {html.escape(", ".join(devices))}</span>' if devices else ""
    return (f'<tr data-service="{sid}"><td><code>clara-svc-{sid}</code><br>{_cell(", ".join(row.get("names", [])))}</td>'
            f"<td><code>{_cell(row.get('image'))}:{_cell(row.get('tag'))}</code><br><code>{html.escape(command)}</code></td>"
            f"<td>{_cell(row.get('backend'))}{gpus}</td><td class=\"{css}\">{html.escape(state)}</td><td>{conns}</td>"
            f"<td>{_cell(row.get('started_at'))}</td><td class=\"last-used\">{_cell(row.get('last_used'))}</td>"
            f"<td class=\"leases\">{held}</td><td>{_cell(', '.join(row.get('pipelines', [])))}</td>"
            f"<td><button class=\"logs\" data-action=\"logs\" data-sid=\"{sid}\">Logs</button> "
            f"<button class=\"stop\" data-action=\"stop\" data-sid=\"{sid}\" data-leases=\"{len(leases)}\">Stop"
            "</button></td></tr>")


def _json_block(rows: list[dict[str, Any]]) -> str:
    """JSON safe inside a script element: no ``<``, ``>`` or ``&`` can end it or open a tag."""
    text = json.dumps(rows, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(rows: list[dict[str, Any]]) -> str:
    body = "".join(_row(r) for r in rows) or '<tr><td colspan="10">No services recorded yet.</td></tr>'
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Clara services</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        "<h1>Clara services</h1><p>Shared services started by Clara pipelines, one per identity "
        "(image, tag, command). They outlive runs; the <code>clara_service_reaper</code> DAG stops the idle "
        "ones.</p><p id=\"message\" role=\"status\"></p><table><thead><tr><th>service</th><th>identity</th>"
        "<th>backend</th><th>state</th><th>connections</th><th>started</th><th>last used</th>"
        "<th>runs holding leases</th><th>pipelines</th><th></th></tr></thead>"
        f"<tbody>{body}</tbody></table><h2 id=\"logs-title\"></h2><pre id=\"logs\"></pre>"
        f"<script type=\"application/json\" id=\"data\">{_json_block(rows)}</script>"
        "</body></html>"
    )
