"""Which clara-airflow deployment this is: the identity every container and record carries, so that two
deployments sharing one Docker engine (or Kubernetes namespace) never reap, adopt or stop each other's
containers.

``[clara] deployment_id`` names it explicitly. Unset, it is made once per metadata database: the Variable
``clara_deployment_id`` holds 12 random hex digits, written by the first component that needs it and read
by every other (workers, the reaper, the CLI and the api-server all share the metadata database, so they
agree). Variables have no compare-and-set: two first writers at the same moment could each label a
container with their own id before one id wins; the loser's containers are then *foreign* to everyone,
which the reaper never touches (a leak, never a wrong removal), and ``services list`` shows them. Set
``deployment_id`` explicitly where two deployments share an engine.
"""

from __future__ import annotations

import time
import uuid

from clara_airflow.services.records import VariableStore, variable_store
from clara_airflow.settings import Options

DEPLOYMENT_KEY = "clara_deployment_id"
SETTLE = 0.2  # seconds between writing a new id and reading back the one that won
_RESOLVED: dict[str, str] = {}  # per process: the Variable is read once


def deployment_id(options: Options, store: VariableStore | None = None) -> str:
    """This deployment's identity: ``[clara] deployment_id``, else the metadata database's Variable."""
    if options.deployment.deployment_id:
        return options.deployment.deployment_id
    if "id" in _RESOLVED:
        return _RESOLVED["id"]
    store = store or variable_store()
    found = _valid(store.get(DEPLOYMENT_KEY))
    if found is None:
        store.set(DEPLOYMENT_KEY, uuid.uuid4().hex[:12])
        time.sleep(SETTLE)  # a concurrent first writer: both read back the same last write
        found = _valid(store.get(DEPLOYMENT_KEY)) or "unknown"
    _RESOLVED["id"] = found
    return found


def identified(options: Options, store: VariableStore | None = None) -> Options:
    """``options`` with the deployment's identity resolved (what backends label and check with)."""
    return options if options.deployment.deployment_id else options.identified(deployment_id(options, store))


def owner_of(labels: dict[str, str] | None) -> str:
    """The deployment a container or object says it belongs to; "" for one made before identities."""
    from clara_airflow.backends.base import LABEL_DEPLOYMENT

    return (labels or {}).get(LABEL_DEPLOYMENT, "")


def is_foreign(owner: str, options: Options) -> bool:
    """True when ``owner`` is another deployment. Containers without the label (made by clara-airflow
    before 0.2) count as this deployment's, so an upgrade keeps reaping its own."""
    return bool(owner) and owner != options.deployment.deployment_id


def _valid(raw: str | None) -> str | None:
    from clara_airflow.settings.deployment import DEPLOYMENT_ID

    text = (raw or "").strip()
    return text if DEPLOYMENT_ID.fullmatch(text) else None
