"""The services page plugin inside Airflow's real API app: every route needs an authorised user."""

from __future__ import annotations

from typing import Any

import pytest

ROUTES = [("GET", "/clara/services"), ("GET", "/clara/api/services"),
          ("GET", "/clara/api/services/0123456789ab/logs"), ("POST", "/clara/api/services/0123456789ab/stop")]


@pytest.fixture(scope="module")
def client(airflow_db: None) -> Any:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    return TestClient(create_app())


def token(role: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=role, role=role)))


def call(client: Any, method: str, path: str, role: str | None = None, **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", {})
    if role:
        headers["Authorization"] = f"Bearer {token(role)}"
    return client.request(method, path, headers=headers, **kwargs)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_anonymous_requests_are_refused(client: Any, method: str, path: str) -> None:
    assert call(client, method, path).status_code in (401, 403)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_forged_token_is_refused(client: Any, method: str, path: str) -> None:
    answer = client.request(method, path, headers={"Authorization": "Bearer not.a.jwt"})
    assert answer.status_code in (401, 403)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_viewers_may_not_see_or_stop_services(client: Any, method: str, path: str) -> None:
    assert call(client, method, path, "viewer").status_code == 403


def test_operators_see_the_page_and_json(client: Any) -> None:
    page = call(client, "GET", "/clara/services", "op")
    assert page.status_code == 200 and "<h1>Clara services</h1>" in page.text
    assert isinstance(call(client, "GET", "/clara/api/services", "op").json(), list)


def test_the_session_cookie_of_the_ui_is_accepted(client: Any) -> None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    client.cookies.set(COOKIE_NAME_JWT_TOKEN, token("admin"))
    try:
        assert client.get("/clara/services").status_code == 200
    finally:
        client.cookies.clear()


def test_stop_needs_the_csrf_header_and_a_known_service(client: Any) -> None:
    path = "/clara/api/services/0123456789ab/stop"
    assert call(client, "POST", path, "op").status_code == 400
    answer = call(client, "POST", path, "op", headers={"X-Requested-With": "clara-airflow"})
    assert answer.status_code == 404 and "no service" in answer.json()["detail"]


def test_plugin_is_registered_with_airflow(client: Any) -> None:
    plugins = call(client, "GET", "/api/v2/plugins", "admin").json()["plugins"]
    clara = next(p for p in plugins if p["name"] == "clara")
    assert any(v["href"] == "/clara/services" for v in clara["external_views"])


@pytest.fixture
def readers(monkeypatch: Any) -> None:
    """The auth manager, configured so that role ``reader`` may read Variables but not delete them, and
    role ``deleter`` may delete them but not read them."""
    from airflow.api_fastapi.app import get_auth_manager

    manager_class = type(get_auth_manager())
    original = manager_class.is_authorized_variable

    def is_authorized_variable(self: Any, *, method: str, user: Any, details: Any = None) -> bool:
        if getattr(user, "role", None) == "reader":
            return method == "GET"
        if getattr(user, "role", None) == "deleter":
            return method == "DELETE"
        return bool(original(self, method=method, user=user, details=details))

    monkeypatch.setattr(manager_class, "is_authorized_variable", is_authorized_variable)


def test_a_user_who_may_read_but_not_delete_variables_sees_the_page_and_cannot_stop(client: Any,
                                                                                   readers: None) -> None:
    assert call(client, "GET", "/clara/services", "reader").status_code == 200
    assert call(client, "GET", "/clara/api/services", "reader").status_code == 200
    answer = call(client, "POST", "/clara/api/services/0123456789ab/stop", "reader",
                  headers={"X-Requested-With": "clara-airflow"})
    assert answer.status_code == 403


STOP = "/clara/api/services/0123456789ab/stop"
CSRF = {"X-Requested-With": "clara-airflow"}


@pytest.fixture
def fake_page(monkeypatch: Any) -> list[Any]:
    """The page's backend calls, recorded (the routes' own rules are under test, not the services)."""
    calls: list[Any] = []
    monkeypatch.setattr("clara_airflow.services.page.service_logs",
                        lambda sid, lines: calls.append(("logs", sid, lines)) or f"{lines} lines of {sid}")
    monkeypatch.setattr("clara_airflow.services.page.stop", lambda sid, force: calls.append(("stop", sid, force))
                        or ((409, {"detail": "held by run r"}) if sid == "bbbbbbbbbbbb" else (200, {"stopped": sid})))
    monkeypatch.setattr("clara_airflow.services.admin.service_rows", lambda: [{"id": "0123456789ab", "names": ["x"]}])
    return calls


@pytest.mark.parametrize(("query", "lines"), [("", 100), ("?lines=7", 7), ("?lines=0", 1), ("?lines=-5", 1),
                                              ("?lines=2000", 2000), ("?lines=2001", 2000)])
def test_log_lines_are_bounded(client: Any, fake_page: list[Any], query: str, lines: int) -> None:
    answer = call(client, "GET", f"/clara/api/services/0123456789ab/logs{query}", "op")
    assert answer.status_code == 200 and answer.text == f"{lines} lines of 0123456789ab"
    assert fake_page == [("logs", "0123456789ab", lines)]


@pytest.mark.parametrize(("sid", "status"), [("a" * 64, 200), ("a" * 65, 400), ("ab-cd", 400), ("ab%20cd", 400),
                                             ("..", 404)])
def test_service_ids_are_checked_before_any_use(client: Any, fake_page: list[Any], sid: str, status: int) -> None:
    answer = call(client, "GET", f"/clara/api/services/{sid}/logs", "op")
    assert answer.status_code == status
    if status == 400:
        assert answer.json() == {"detail": "a service id is 12 hex digits"} and fake_page == []
        assert call(client, "POST", f"/clara/api/services/{sid}/stop", "op", headers=CSRF).status_code == 400
        assert fake_page == []


def test_stop_passes_force_and_answers_with_the_result(client: Any, fake_page: list[Any]) -> None:
    answer = call(client, "POST", STOP, "op", headers=CSRF)
    assert answer.status_code == 200 and answer.json() == {"stopped": "0123456789ab"}
    call(client, "POST", STOP + "?force=true", "op", headers=CSRF)
    assert fake_page == [("stop", "0123456789ab", False), ("stop", "0123456789ab", True)]
    refused = call(client, "POST", "/clara/api/services/bbbbbbbbbbbb/stop", "op", headers=CSRF)
    assert refused.status_code == 409 and refused.json() == {"detail": "held by run r"}


def test_stop_without_the_csrf_header_says_which_header(client: Any, fake_page: list[Any]) -> None:
    for headers in ({}, {"X-Requested-With": "XMLHttpRequest"}):
        answer = call(client, "POST", STOP, "op", headers=headers)
        assert answer.status_code == 400
        assert answer.json() == {"detail": "send the header X-Requested-With: clara-airflow"}
    assert fake_page == []


def test_the_page_and_json_show_the_service_rows(client: Any, fake_page: list[Any]) -> None:
    assert call(client, "GET", "/clara/api/services", "op").json() == [{"id": "0123456789ab", "names": ["x"]}]
    assert 'data-service="0123456789ab"' in call(client, "GET", "/clara/services", "op").text


@pytest.mark.parametrize("path", ["/clara/docs", "/clara/redoc", "/clara/openapi.json"])
def test_the_app_publishes_no_schema_or_docs(client: Any, path: str) -> None:
    assert call(client, "GET", path, "admin").status_code == 404


def test_the_plugin_mounts_one_app_under_clara_and_one_nav_entry(monkeypatch: Any) -> None:
    from clara_airflow import plugin

    (mounted,) = plugin._fastapi_apps()
    assert mounted["url_prefix"] == "/clara" and mounted["name"] == "Clara services"
    assert mounted["app"].title == "clara-airflow services"
    assert plugin.ClaraPlugin.name == "clara"
    assert plugin.ClaraPlugin.external_views == [{"name": "Clara services", "href": "/clara/services",
                                                  "destination": "nav", "url_route": "clara-services",
                                                  "category": "browse"}]

    def missing() -> Any:
        raise ImportError("no fastapi on this worker")

    monkeypatch.setattr(plugin, "create_app", missing)
    assert plugin._fastapi_apps() == []


LOAD_PLUGINS = """
import sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()  # what a task process on a Celery worker does
if hasattr(plugins_manager, "_get_plugins"):  # Airflow 3.2 on
    loaded = plugins_manager._get_plugins()[0]
else:  # Airflow 3.1
    loaded = plugins_manager.plugins
assert any(p.name == "clara" for p in loaded)
assert "fastapi" not in sys.modules, "loading the plugin built the FastAPI app"
if hasattr(plugins_manager, "get_fastapi_plugins"):  # what the api-server does
    apps, _ = plugins_manager.get_fastapi_plugins()
else:
    plugins_manager.initialize_fastapi_plugins()
    apps = plugins_manager.fastapi_apps
assert [a["url_prefix"] for a in apps if a["name"] == "Clara services"] == ["/clara"], apps
print("ok")
"""


def test_a_process_that_loads_plugins_builds_the_app_only_when_airflow_asks_for_it(tmp_path: Any) -> None:
    """Every task process on a Celery worker loads the plugins; building the app there cost 1.2 s a task."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    done = subprocess.run([sys.executable, "-c", LOAD_PLUGINS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_stopping_needs_exactly_the_delete_permission(client: Any, readers: None, fake_page: list[Any]) -> None:
    assert call(client, "POST", STOP, "deleter", headers=CSRF).status_code == 200
    assert call(client, "GET", "/clara/services", "deleter").status_code == 403
    assert fake_page == [("stop", "0123456789ab", False)]
