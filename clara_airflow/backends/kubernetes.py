"""Kubernetes backend: shared services as one Deployment plus one Service each, created through the
provider's KubernetesHook. Step pods are decided in ``kubernetes_steps.py`` and run by
``clara_airflow.operators.kubernetes_step``.

The object *name* ``clara-svc-<id>`` is the start lock: a second create gets HTTP 409 (AlreadyExists)
and reuses the winner's Deployment. Connection values are ``<name>.<namespace>.svc:<port>``. Pods run
under Pod Security "restricted" (non-root, no capabilities, RuntimeDefault seccomp); the service data
folder and volume connections are PersistentVolumeClaims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clara_airflow.backends import kubernetes_services as objects
from clara_airflow.backends import kubernetes_watch as watch
from clara_airflow.backends.base import (
    LABEL_ID,
    ServiceInstance,
    foreign_error,
    foreign_owner,
)
from clara_airflow.backends.kubernetes_admin import KubernetesAdmin
from clara_airflow.backends.kubernetes_pods import CREATE_HINTS, api_message
from clara_airflow.backends.kubernetes_services import SECRETS, SPEC_HASH
from clara_airflow.compiler.identity import service_name, volume_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.errors import ServiceError
from clara_airflow.settings import Options

CONTAINER = objects.CONTAINER


class KubernetesBackend:
    """A Kubernetes cluster: hands out the service manager (step tasks are built in clara_airflow.operators)."""

    name = "kubernetes"

    def __init__(self, options: Options) -> None:
        self.options = options

    def service_manager(self) -> KubernetesServiceManager:
        return KubernetesServiceManager(self.options)


def _rolling(deployment: Any) -> bool:
    """A rollout is under way: the controller has not yet seen the newest spec (a Recreate rollout's old
    pod may still count as ready)."""
    generation = deployment.metadata.generation if deployment.metadata else None
    observed = deployment.status.observed_generation if deployment.status else None
    return generation is not None and observed is not None and observed < generation


class KubernetesServiceManager(KubernetesAdmin):
    """Finds or creates a service's Deployment and Service, and waits until its pod is ready."""

    POLL = 0.5

    def host(self, sid: str) -> str:
        """``<name>.<namespace>.svc``: resolves whatever the cluster's DNS domain is."""
        return f"{service_name(sid)}.{self.namespace}.svc"

    # -- objects (decided in kubernetes_services.py) ------------------------------------------------------
    def deployment(self, svc: ServicePlan) -> Any:
        return objects.deployment(svc, self.namespace, self.data_dir, self.deployment_options)

    def service(self, svc: ServicePlan) -> Any:
        return objects.service(svc, self.namespace, self.deployment_options)

    def claim(self, sid: str, path: str) -> Any:
        return objects.claim(sid, path, self.namespace, self.deployment_options)

    def data_claim(self) -> Any:
        return objects.data_claim(self.namespace, self.deployment_options)

    # -- find or start ------------------------------------------------------------------------------------
    def ensure(self, svc: ServicePlan, *, timeout: float, log: Any,
               sole_user: Callable[[], bool] | None = None) -> ServiceInstance:
        """Return the ready instance of ``svc``, creating its claims, Deployment and Service if needed.
        ``sole_user()`` says whether the caller's run is the only one using the service (a rotated pull
        secret is then rolled out)."""
        from urllib3.exceptions import HTTPError as TransportError

        try:
            return self._ensure(svc, timeout=timeout, log=log, sole_user=sole_user)
        except TransportError as exc:
            raise ServiceError(
                f"the Kubernetes API server does not answer ({exc}); check [clara] kubernetes_conn_id, "
                "kube_config_file or in_cluster, and that the worker can reach the cluster") from None

    def _ensure(self, svc: ServicePlan, *, timeout: float, log: Any,
                sole_user: Callable[[], bool] | None) -> ServiceInstance:
        name = service_name(svc.id)
        deadline = time.monotonic() + timeout
        self._check_storage(svc, log)
        for _, path in svc.volumes:
            self._create(self.core.create_namespaced_persistent_volume_claim, self.claim(svc.id, path))
        self._create(self.core.create_namespaced_persistent_volume_claim, self.data_claim())
        wanted = self.deployment(svc)
        created = self._create(self.apps.create_namespaced_deployment, wanted)
        if not created:
            self._compare(wanted, log, sole_user)
        if not self._create(self.core.create_namespaced_service, self.service(svc)):
            self._add_ports(svc, log)
        log.info("%s Deployment %s in namespace %s", "created" if created else "found", name, self.namespace)
        deployment = self._wait_ready(svc, deadline, log)
        started = deployment.metadata.creation_timestamp
        return ServiceInstance(sid=svc.id, host=self.host(svc.id), created=created, ref=name,
                               started_at=started.isoformat() if hasattr(started, "isoformat") else str(started or ""),
                               volumes={p: volume_name(svc.id, p) for _, p in svc.volumes})

    def _create(self, create: Any, body: Any) -> bool:
        """True when this call created the object, False on 409 (it exists: someone else won)."""
        from kubernetes.client.exceptions import ApiException

        try:
            create(namespace=self.namespace, body=body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise ServiceError(f"cannot create {body.kind} {body.metadata.name} in namespace {self.namespace}: "
                               f"{exc.status} {exc.reason}: {api_message(exc)}{CREATE_HINTS.get(exc.status, '')}"
                               ) from None

    def _add_ports(self, svc: ServicePlan, log: Any) -> None:
        """Section 7.4: new ports of a running identity are added to its Service object."""
        existing = self.core.read_namespaced_service(service_name(svc.id), self.namespace)
        have = {p.port for p in existing.spec.ports or []}
        wanted = sorted(set(svc.ports) - have)
        if wanted:
            log.info("adding ports %s to Service %s", wanted, service_name(svc.id))
            ports = [{"name": p.name, "port": p.port, "targetPort": p.target_port} for p in existing.spec.ports or []
                     if p.name != "none"]
            ports += [{"name": f"p{p}", "port": p, "targetPort": p} for p in wanted]
            self.core.patch_namespaced_service(service_name(svc.id), self.namespace, {"spec": {"ports": ports}})

    def _check_storage(self, svc: ServicePlan, log: Any) -> None:
        refusal = watch.storage_check(self.hook.api_client, self.deployment_options, bool(svc.volumes), log)
        if refusal:
            raise ServiceError(f"service {service_name(svc.id)} ({svc.image}:{svc.tag}): {refusal}")

    def _wait_ready(self, svc: ServicePlan, deadline: float, log: Any) -> Any:
        name = service_name(svc.id)
        reported: set[str] = set()
        while True:
            deployment = self.apps.read_namespaced_deployment(name, self.namespace)
            if (deployment.spec.replicas or 0) == 0:
                log.warning("Deployment %s was scaled to 0; scaling it back to 1", name)
                self.apps.patch_namespaced_deployment(name, self.namespace, {"spec": {"replicas": 1}})
            elif (deployment.status.ready_replicas or 0) >= 1 and not _rolling(deployment):
                return deployment
            passing = self._diagnose(svc, deployment, log, reported)
            if time.monotonic() > deadline:
                waited = "".join(f"\n{text}" for text in passing)
                raise ServiceError(f"service {name} ({svc.image}:{svc.tag}) was not ready in time "
                                   f"(services.start_timeout){waited}{self._events(svc.id)}", logs=self.logs(svc.id))
            time.sleep(self.POLL)

    def _diagnose(self, svc: ServicePlan, deployment: Any, log: Any, reported: set[str]) -> list[str]:
        """Fail at once on what waiting cannot fix (kubernetes_watch); log what may pass, once each, and
        return it for the timeout's message."""
        try:
            events = self.core.list_namespaced_event(self.namespace).items
        except Exception:
            events = []
        findings = watch.deployment_findings(deployment)
        findings += [f for pod in self._pods(svc.id) for f in watch.pod_findings(pod, events)]
        for claim in self._claims(svc):
            findings += watch.claim_findings(claim, events)
        for finding in findings:
            if finding.fatal:
                raise ServiceError(f"service {service_name(svc.id)} ({svc.image}:{svc.tag}) cannot start: "
                                   f"{finding.text}{self._events(svc.id)}", logs=self.logs(svc.id))
            if finding.text not in reported:
                reported.add(finding.text)
                log.warning("service %s is not ready yet: %s", service_name(svc.id), finding.text)
        return [f.text for f in findings]

    def _claims(self, svc: ServicePlan) -> list[Any]:
        names = [volume_name(svc.id, p) for _, p in svc.volumes] + [self.deployment_options.service_data_claim]
        return watch.read_claims(self.core, self.namespace, names)

    def _compare(self, wanted: Any, log: Any, sole_user: Callable[[], bool] | None) -> None:
        """A running identity keeps its start configuration (section 7.4): a different one is reported.
        Only rotated image pull secrets are taken, once no other run uses the service (the pod restarts)."""
        name = wanted.metadata.name
        found = self.apps.read_namespaced_deployment(name, self.namespace)
        owner = foreign_owner(found.metadata.labels if found.metadata else None, self.deployment_options.deployment_id)
        if owner is not None:
            raise ServiceError(foreign_error("Deployment", name, owner))
        have = (found.metadata.annotations or {}) if found.metadata else {}
        notes = wanted.metadata.annotations
        if have.get(SPEC_HASH) == notes[SPEC_HASH]:
            return
        if have.get(SECRETS) != notes[SECRETS]:
            log.warning("service %s runs with another configuration than this pipeline asks for (resources, "
                        "variables, volumes, pull secrets or scheduling differ); it is reused as it is. Stop it "
                        "with 'clara-airflow services stop %s' for the next run to start it with this one",
                        name, wanted.metadata.labels[LABEL_ID])
        elif sole_user is None or not sole_user():
            log.warning("service %s: its image pull secrets changed; they are rolled out (the pod restarts) by the "
                        "first run that finds no other run using it", name)
        else:
            secrets = [{"name": s.name} for s in wanted.spec.template.spec.image_pull_secrets or []]
            log.info("service %s: rolling out its new image pull secrets %s (no other run uses it)", name,
                     [s["name"] for s in secrets])
            path = "/spec/template/spec/imagePullSecrets"
            patch = [{"op": "add", "path": path, "value": secrets} if secrets else {"op": "remove", "path": path},
                     {"op": "add", "path": "/metadata/annotations", "value": {**have, **notes}}]
            self.apps.patch_namespaced_deployment(name, self.namespace, patch)  # a list: a JSON patch

    def _events(self, sid: str) -> str:
        try:
            events = self.core.list_namespaced_event(self.namespace).items
        except Exception:
            return ""
        return watch.events_text(events, service_name(sid), self.deployment_options.service_data_claim)
