"""A small fake kubelet: runs the pods and Deployments created in the fake API as Docker containers.

Pods run their init containers, then their first container, with env, command/args and volumes
(a claim is a folder under ``claims/``, a hostPath the host folder, sub-paths honoured), as the pod's
``runAsUser``/``runAsGroup``, with ``fsGroup`` applied to each volume's root as the kubelet does
(group-owned, setgid, group-writable, only when the root's group differs: ``OnRootMismatch``), except
on claims named ``nfs-*``, which behave as NFS does (fsGroup is never applied). Their
status, termination messages (``FallbackToLogsOnError``) and logs are written back. A Deployment's pod
template runs detached on the test network with the Service's DNS names as network aliases, and is
reported ready once its readiness port answers (its pod object, named ``<deployment>-fake``, says
Running, or CrashLoopBackOff with the container's log once it exits); in a restricted namespace a template that breaks Pod
Security gets the ``ReplicaFailure`` condition a ReplicaSet would report, and one whose claim asks a
ReadWriteOnce-only class (``REFUSING``) for ReadWriteMany never runs: the claim gets the provisioner's
``ProvisioningFailed`` event. Test code only.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import docker
import requests
from kubernetes import client, config

LABEL = "clara-airflow/test"
SERVICE_POD = "fake-kubelet/deployment"  # the annotation of the pod object standing for a Deployment's pod
# storage classes whose provisioner offers ReadWriteOnce only, as the managed clusters' default ones
REFUSING = {"ebs-sc": "ebs.csi.aws.com"}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(spec: Any, code: int, output: bytes, started: str) -> dict[str, Any]:
    """A terminated container's status; ``FallbackToLogsOnError`` puts the log tail into the message."""
    terminated: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                  "startedAt": started, "finishedAt": now()}
    if code and spec.termination_message_policy == "FallbackToLogsOnError":
        terminated["message"] = "\n".join(output.decode("utf-8", "replace").splitlines()[-80:])[-2048:]
    return {"name": spec.name, "ready": False, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": terminated}}


class FakeKubelet:
    def __init__(self, kubeconfig: Path, network: str, claims: Path, logs: dict[tuple[str, str], bytes],
                 restricted: frozenset[str] = frozenset()) -> None:
        self.restricted = restricted
        api = config.new_client_from_config(str(kubeconfig))
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.docker = docker.from_env()
        self.network, self.claims, self.logs = network, claims, logs
        self.seen: set[str] = set()
        self.services: dict[tuple[str, str], str] = {}
        self.refused_claims: set[tuple[str, str]] = set()
        self.pod_states: dict[tuple[str, str], dict[str, Any]] = {}  # a Deployment's pod object, as last written
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> FakeKubelet:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for container in self.docker.containers.list(all=True, filters={"label": LABEL}):
            try:
                container.remove(force=True)
            except docker.errors.APIError as exc:  # a pod's own thread may be removing it, or be done
                if exc.status_code not in (404, 409):
                    raise

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._sync_pods()
                self._sync_deployments()
            except Exception as exc:  # keep the kubelet alive; the tests assert outcomes
                print(f"fake kubelet: {type(exc).__name__}: {exc}")
            time.sleep(0.2)

    # -- pods ------------------------------------------------------------------------------------------
    def _sync_pods(self) -> None:
        for pod in self.core.list_pod_for_all_namespaces(_request_timeout=5).items:
            key = f"{pod.metadata.namespace}/{pod.metadata.name}/{pod.metadata.uid}"
            if SERVICE_POD in (pod.metadata.annotations or {}):
                continue  # a Deployment's pod: run by _sync_deployments
            if key not in self.seen and (pod.status is None or pod.status.phase in (None, "Pending")):
                self.seen.add(key)
                threading.Thread(target=self._run_pod, args=(pod,), daemon=True).start()

    def _roots(self, pod: Any) -> dict[str, Path]:
        roots = {}
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is not None:
                roots[volume.name] = self.claims / volume.persistent_volume_claim.claim_name
            elif volume.host_path is not None:
                roots[volume.name] = Path(volume.host_path.path)
        return roots

    def _apply_fs_group(self, pod: Any) -> None:
        group = pod.spec.security_context.fs_group if pod.spec.security_context else None
        if group is None:
            return
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is None or volume.persistent_volume_claim.claim_name.startswith("nfs-"):
                continue  # the kubelet applies fsGroup to volumes that support ownership management: not NFS
            root = self.claims / volume.persistent_volume_claim.claim_name
            root.mkdir(parents=True, exist_ok=True)
            if root.stat().st_gid == group:
                continue  # OnRootMismatch
            for path in [root, *root.rglob("*")]:
                os.chown(path, -1, group, follow_symlinks=False)
                if not path.is_symlink():
                    os.chmod(path, path.stat().st_mode | stat.S_IRWXG | (stat.S_ISGID if path.is_dir() else 0))

    def _binds(self, pod: Any, mounts: list[Any]) -> dict[str, dict[str, str]]:
        roots = self._roots(pod)
        binds = {}
        for mount in mounts or []:
            if mount.name not in roots:
                continue
            source = roots[mount.name] / (mount.sub_path or "")
            source.mkdir(parents=True, exist_ok=True)
            binds[str(source)] = {"bind": mount.mount_path, "mode": "ro" if mount.read_only else "rw"}
        return binds

    def _container(self, pod: Any, spec: Any) -> tuple[int, bytes]:
        env = {e.name: e.value for e in spec.env or [] if e.value is not None}
        ctx = pod.spec.security_context
        user = f"{ctx.run_as_user}:{ctx.run_as_group or ctx.run_as_user}" if ctx and ctx.run_as_user else None
        groups = [ctx.fs_group] if ctx and ctx.fs_group is not None else None
        container = self.docker.containers.run(
            spec.image, command=spec.args or None, entrypoint=spec.command or None, environment=env,
            volumes=self._binds(pod, spec.volume_mounts), network=self.network, detach=True, user=user,
            group_add=groups, labels={LABEL: "pod"},
            name=f"kube-{pod.metadata.namespace}-{pod.metadata.name}-{spec.name}")
        try:
            if spec is pod.spec.containers[0]:  # the main container runs: the pod is Running, as a kubelet says
                self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
                    "phase": "Running", "startTime": now(), "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": spec.name, "ready": True, "restartCount": 0, "image": "",
                                           "imageID": "", "state": {"running": {"startedAt": now()}}}]}})
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    return int(container.wait(timeout=1)["StatusCode"]), container.logs()
                except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):  # still running
                    if self._deleted(pod):  # a deleted pod's containers are stopped, as a kubelet does
                        return 137, container.logs()
            return 137, container.logs()
        except docker.errors.APIError:  # removed under it (the kubelet stopping at the end of the tests)
            return 137, b""
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    def _deleted(self, pod: Any) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
            return False
        except ApiException as exc:
            return exc.status == 404
        except Exception:  # the fake API server is gone: the tests are over
            return self.stopping.is_set()

    def _run_pod(self, pod: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._run(pod)
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted while it ran is simply gone
                raise

    def _run(self, pod: Any) -> None:
        started = now()
        code, output = 0, b""
        if not self._claims_bound(pod.metadata.namespace, pod.spec.volumes):
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
                "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                   "message": "0/1 nodes are available: pod has unbound immediate "
                                                              "PersistentVolumeClaims. preemption: 0/1 nodes are "
                                                              "available: 1 Preemption is not helpful for scheduling."}]}})
            return  # never scheduled: the operator's schedule timeout ends it
        self._apply_fs_group(pod)
        inits = []
        for init in pod.spec.init_containers or []:
            code, output = self._container(pod, init)
            inits.append(_status(init, code, output, started))
            if code:
                break
        main = pod.spec.containers[0]
        if code == 0:
            code, output = self._container(pod, main)
            state = _status(main, code, output, started)
        else:
            state = {"name": main.name, "ready": False, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"waiting": {"reason": "PodInitializing"}}}
        self.logs[(pod.metadata.namespace, pod.metadata.name)] = output
        status = {"phase": "Succeeded" if code == 0 else "Failed", "startTime": started,
                  "conditions": [{"type": "PodScheduled", "status": "True"}],
                  "initContainerStatuses": inits, "containerStatuses": [state]}
        if self._deleted(pod):
            return
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})

    # -- deployments -----------------------------------------------------------------------------------
    def _sync_deployments(self) -> None:
        live = set()
        for deployment in self.apps.list_deployment_for_all_namespaces(_request_timeout=5).items:
            key = (deployment.metadata.namespace, deployment.metadata.name)
            if (deployment.spec.replicas or 0) < 1:
                continue
            if self._refused(deployment):
                continue
            if not self._provisioned(deployment):
                self._service_pod(deployment, {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]})
                continue
            live.add(key)
            if key not in self.services:
                self.services[key] = self._start_service(deployment)
            ready = self._ready(deployment, self.services[key])
            self._service_pod(deployment, self._service_status(deployment, self.services[key], ready))
            if ready != (deployment.status.ready_replicas or 0):
                self.apps.patch_namespaced_deployment_status(key[1], key[0], {"status": {
                    "replicas": 1, "readyReplicas": ready, "availableReplicas": ready}})
        for key in set(self.services) - live:
            self.docker.containers.get(self.services.pop(key)).remove(force=True)
        for key in set(self.pod_states) - live:
            self.pod_states.pop(key)
            with contextlib.suppress(Exception):  # deleted with its Deployment, or never made
                self.core.delete_namespaced_pod(f"{key[1]}-fake", key[0])

    def _service_status(self, deployment: Any, container_id: str, ready: int) -> dict[str, Any]:
        """A service pod's status: running (ready or not), or, once its container exited, CrashLoopBackOff
        with its log kept for ``pods/log``, as a kubelet restarting it with a back-off reports."""
        info = self.docker.api.inspect_container(container_id)
        name = f"{deployment.metadata.name}-fake"
        base = {"name": "service", "ready": bool(ready), "image": "", "imageID": ""}
        if info["State"]["Status"] == "exited":
            self.logs[(deployment.metadata.namespace, name)] = self.docker.api.logs(container_id)
            waiting = {"reason": "CrashLoopBackOff", "message": f"back-off 10s restarting failed container=service "
                       f"pod={name}_{deployment.metadata.namespace}"}
            return {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{**base, "restartCount": 1, "state": {"waiting": waiting}}]}
        return {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{**base, "restartCount": 0, "state": {"running": {"startedAt": now()}}}]}

    def _service_pod(self, deployment: Any, status: dict[str, Any]) -> None:
        """The Deployment's one pod as an API object (what the service manager reads), kept at ``status``."""
        key = (deployment.metadata.namespace, deployment.metadata.name)
        if self.pod_states.get(key) == status:
            return
        name = f"{key[1]}-fake"
        if key not in self.pod_states:
            template = self.apps.api_client.sanitize_for_serialization(deployment.spec.template)
            with contextlib.suppress(Exception):  # made before by an earlier kubelet loop
                meta = {**template.get("metadata", {}), "name": name, "annotations": {SERVICE_POD: key[1]}}
                self.core.create_namespaced_pod(key[0], {"metadata": meta, "spec": template["spec"]})
        self.core.patch_namespaced_pod_status(name, key[0], {"status": status})
        self.pod_states[key] = status

    def _refused(self, deployment: Any) -> bool:
        """In a restricted namespace, a template that breaks Pod Security never gets a pod."""
        from tests.kube.admission import restricted_problems

        if deployment.metadata.namespace not in self.restricted:
            return False
        template = self.apps.api_client.sanitize_for_serialization(deployment.spec.template)
        problems = restricted_problems(template.get("spec") or {}, (template.get("metadata") or {}).get("annotations"))
        if problems and not (deployment.status and deployment.status.conditions):
            message = (f'pods "{deployment.metadata.name}-x" is forbidden: violates PodSecurity "restricted:latest": '
                       + "; ".join(problems))
            self.apps.patch_namespaced_deployment_status(deployment.metadata.name, deployment.metadata.namespace, {
                "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                           "message": message}]}})
        return bool(problems)

    def _provisioned(self, deployment: Any) -> bool:
        return self._claims_bound(deployment.metadata.namespace, deployment.spec.template.spec.volumes)

    def _claims_bound(self, ns: str, volumes: Any) -> bool:
        """The storage profile: a claim of a class in ``REFUSING`` that asks for ReadWriteMany gets the
        ``ProvisioningFailed`` event its CSI provisioner reports, and stays Pending, so no pod mounting it
        runs. A claim that is not an API object (a test's folder under ``claims/``) is taken as bound."""
        from kubernetes.client.exceptions import ApiException

        for volume in volumes or []:
            if volume.persistent_volume_claim is None:
                continue
            name = volume.persistent_volume_claim.claim_name
            try:
                claim = self.core.read_namespaced_persistent_volume_claim(name, ns)
            except ApiException:
                continue
            provisioner = REFUSING.get(claim.spec.storage_class_name or "")
            if provisioner is None or "ReadWriteMany" not in (claim.spec.access_modes or []):
                continue
            if (ns, name) not in self.refused_claims:
                self.refused_claims.add((ns, name))
                self.core.create_namespaced_event(ns, {
                    "metadata": {"name": f"{name}.provisioning"}, "type": "Warning", "reason": "ProvisioningFailed",
                    "involvedObject": {"kind": "PersistentVolumeClaim", "name": name, "namespace": ns},
                    "message": f'failed to provision volume with StorageClass "{claim.spec.storage_class_name}": '
                               "rpc error: code = InvalidArgument desc = Volume capabilities not supported: "
                               f"{provisioner} supports only ReadWriteOnce", "source": {"component": provisioner}})
            return False
        return True

    def _start_service(self, deployment: Any) -> str:
        name, ns = deployment.metadata.name, deployment.metadata.namespace
        spec = deployment.spec.template.spec.containers[0]
        api = self.docker.api
        aliases = [name, f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
        ctx = deployment.spec.template.spec.security_context
        user = f"{ctx.run_as_user}:{ctx.run_as_group or ctx.run_as_user}" if ctx and ctx.run_as_user else None
        created = api.create_container(
            spec.image, user=user, command=spec.args or None, entrypoint=spec.command or None,
            environment={e.name: e.value for e in spec.env or [] if e.value is not None},
            labels={LABEL: "deployment"}, name=f"kube-{ns}-{name}",
            host_config=api.create_host_config(network_mode=self.network),
            networking_config=api.create_networking_config({self.network: api.create_endpoint_config(aliases=aliases)}))
        api.start(created["Id"])
        return str(created["Id"])

    def _ready(self, deployment: Any, container_id: str) -> int:
        probe = deployment.spec.template.spec.containers[0].readiness_probe
        info = self.docker.api.inspect_container(container_id)
        if info["State"]["Status"] != "running":
            return 0
        if probe is None or probe.tcp_socket is None:
            return 1
        address = info["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        try:
            with socket.create_connection((address, int(probe.tcp_socket.port)), timeout=0.5):
                return 1
        except OSError:
            return 0
