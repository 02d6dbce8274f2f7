"""Airflow 3 plugin: the Clara services page and its JSON API, mounted on the api-server at /clara.

Plugin apps are not covered by Airflow's authentication, so every route declares Airflow's own
dependencies: the caller must be an authenticated Airflow user (bearer token or the UI's session
cookie), allowed to read Variables to see services and to delete Variables to stop one, the same
permissions that guard the service records themselves.
"""

from __future__ import annotations

from typing import Any

from clara_airflow.airflow_compat import AirflowPlugin


def create_app() -> Any:
    from fastapi import Depends, FastAPI, Header, HTTPException
    from fastapi.responses import HTMLResponse, PlainTextResponse

    from clara_airflow.airflow_compat import requires_access_variable
    from clara_airflow.services import admin, page

    can_read = [Depends(requires_access_variable("GET"))]
    can_stop = [Depends(requires_access_variable("DELETE"))]
    app = FastAPI(title="clara-airflow services", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/services", response_class=HTMLResponse, dependencies=can_read)
    def services_page() -> str:
        return page.render_page(admin.service_rows())

    @app.get("/api/services", dependencies=can_read)
    def services_json() -> list[dict[str, Any]]:
        return admin.service_rows()

    @app.get("/api/services/{sid}/logs", response_class=PlainTextResponse, dependencies=can_read)
    def service_logs(sid: str, lines: int = 100) -> str:
        return page.service_logs(_checked(sid), min(max(lines, 1), 2000))

    @app.post("/api/services/{sid}/stop", dependencies=can_stop)
    def stop(sid: str, force: bool = False,
             x_requested_with: str | None = Header(default=None)) -> dict[str, Any]:
        if x_requested_with != "clara-airflow":  # a cross-site form cannot set this header (CSRF guard)
            raise HTTPException(400, "send the header X-Requested-With: clara-airflow")
        status, body = page.stop(_checked(sid), force=force)
        if status != 200:
            raise HTTPException(status, body["detail"])
        return body

    def _checked(sid: str) -> str:
        if not sid.isalnum() or len(sid) > 64:
            raise HTTPException(400, "a service id is 12 hex digits")
        return sid

    return app


def _fastapi_apps() -> list[dict[str, Any]]:
    try:
        return [{"app": create_app(), "url_prefix": "/clara", "name": "Clara services"}]
    except ImportError:  # a worker without the api-server extras: no page, nothing else breaks
        return []


def _priority() -> type:
    from clara_airflow.priority import RunPriority

    return RunPriority


class _BuiltOnFirstUse:
    """``fastapi_apps``, built the first time Airflow reads it: only the api-server does. Every process that
    loads plugins imports this module, a task process on a Celery worker included, and building the app
    imports FastAPI and Airflow's API security (1.2 s, measured in docs/performance.md)."""

    def __get__(self, instance: object, owner: type) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] | None = owner.__dict__.get("_apps")
        if apps is None:
            apps = _fastapi_apps()
            setattr(owner, "_apps", apps)  # noqa: B010 - on the class, so that every instance shares it
        return apps


class ClaraPlugin(AirflowPlugin):  # type: ignore[misc]
    """Adds the Clara services page to the Airflow UI (navigation entry "Clara services")."""

    name = "clara"
    fastapi_apps = _BuiltOnFirstUse()
    priority_weight_strategies = [_priority()]
    external_views = [{"name": "Clara services", "href": "/clara/services", "destination": "nav",
                       "url_route": "clara-services", "category": "browse"}]
