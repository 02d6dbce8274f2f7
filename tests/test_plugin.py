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
    """The auth manager, configured so that role ``reader`` may read Variables but not delete them."""
    from airflow.api_fastapi.app import get_auth_manager

    manager_class = type(get_auth_manager())
    original = manager_class.is_authorized_variable

    def is_authorized_variable(self: Any, *, method: str, user: Any, details: Any = None) -> bool:
        if getattr(user, "role", None) == "reader":
            return method == "GET"
        return bool(original(self, method=method, user=user, details=details))

    monkeypatch.setattr(manager_class, "is_authorized_variable", is_authorized_variable)


def test_a_user_who_may_read_but_not_delete_variables_sees_the_page_and_cannot_stop(client: Any,
                                                                                   readers: None) -> None:
    assert call(client, "GET", "/clara/services", "reader").status_code == 200
    assert call(client, "GET", "/clara/api/services", "reader").status_code == 200
    answer = call(client, "POST", "/clara/api/services/0123456789ab/stop", "reader",
                  headers={"X-Requested-With": "clara-airflow"})
    assert answer.status_code == 403
