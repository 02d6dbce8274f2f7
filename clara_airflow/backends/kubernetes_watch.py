"""What a service that is not ready yet is waiting for, read from its pods, its claims and their events.

Each finding is *fatal* (it will not get better by waiting: a crash loop, an image that does not exist,
a claim its provisioner refuses, a pod the cluster autoscaler will not make room for) or *passing* (an
unschedulable pod that an autoscaler may make room for, a registry answering 429/5xx, a volume still
attaching): the ensure task fails at once on the first, and logs the second within seconds, then keeps
waiting until ``services.start_timeout``. Pure: the kubernetes client is imported lazily.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "claim_findings", "deployment_findings", "events_text", "pod_findings", "read_claims", "storage_check", "storage_refusal"]

# waiting reasons that no amount of waiting changes
_FATAL_WAITING = ("CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "InvalidImageName")
_PULL = ("ErrImagePull", "ImagePullBackOff")
# a pull error that names a missing image or refused credentials; anything else (429, 5xx, a timeout, a
# registry that is restarting) is retried by the kubelet with a back-off, as the provider treats it
_PERMANENT_PULL = re.compile(r"not found|manifest unknown|unauthorized|authentication required|access denied|"
                             r"denied|forbidden|\b40[134]\b|repository does not exist|pull access denied", re.I)

# Provisioners of block storage that offer ReadWriteOnce only: the default classes of the big managed
# clusters (EKS gp2/gp3, GKE standard-rwo, AKS managed-csi) and the common in-tree ones.
RWO_ONLY = frozenset({
    "ebs.csi.aws.com", "kubernetes.io/aws-ebs", "pd.csi.storage.gke.io", "kubernetes.io/gce-pd",
    "disk.csi.azure.com", "kubernetes.io/azure-disk", "cinder.csi.openstack.org", "kubernetes.io/cinder",
    "rancher.io/local-path", "topolvm.io", "openebs.io/local",
})
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class Finding:
    fatal: bool
    text: str


def deployment_findings(deployment: Any) -> list[Finding]:
    """The Deployment cannot create its pod (Pod Security, a quota, a missing ServiceAccount): its
    ``ReplicaFailure`` condition says why, at once instead of after the start timeout."""
    return [Finding(True, f"its Deployment cannot create a pod: {c.reason}: {c.message}")
            for c in ((deployment.status.conditions or []) if deployment.status else [])
            if c.type == "ReplicaFailure" and c.status == "True"]


def pod_findings(pod: Any, events: list[Any]) -> list[Finding]:
    """What keeps ``pod`` from being ready, from its status and the events about it."""
    name = pod.metadata.name
    found = []
    for status in (pod.status.container_statuses or []) if pod.status else []:
        waiting = status.state.waiting if status.state else None
        if waiting is None or not waiting.reason:
            continue
        message = waiting.message or "no message"
        if waiting.reason in _FATAL_WAITING:
            found.append(Finding(True, f"pod {name} is {waiting.reason} ({message})"))
        elif waiting.reason in _PULL:
            permanent = bool(_PERMANENT_PULL.search(message))
            found.append(Finding(permanent, f"pod {name} is {waiting.reason} ({message})" + (
                "" if permanent else "; a temporary registry error: the kubelet pulls again")))
    for condition in (pod.status.conditions or []) if pod.status else []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
            found.append(Finding(False, f"pod {name} cannot be scheduled: {condition.message or 'no message'}"))
    for event in _about(events, "Pod", name):
        if event.reason == "NotTriggerScaleUp":  # the cluster autoscaler says no node it can add would fit
            found.append(Finding(True, f"pod {name} cannot be scheduled, and the cluster autoscaler will not add "
                                       f"a node for it: {event.message}"))
        elif event.reason in ("FailedMount", "FailedAttachVolume"):  # Multi-Attach of a ReadWriteOnce claim
            found.append(Finding(False, f"pod {name}: {event.reason}: {event.message}"))
    return found


def claim_findings(claim: Any, events: list[Any]) -> list[Finding]:
    """A claim its provisioner refuses (an access mode the class lacks, a quota, a missing class)."""
    if claim is None or (claim.status is not None and claim.status.phase == "Bound"):
        return []
    name = claim.metadata.name
    return [Finding(True, f"claim {name} cannot be provisioned: {event.message}; check [clara] storage_class and "
                          "the access modes it offers (docs/kubernetes.md, 'Storage')")
            for event in _about(events, "PersistentVolumeClaim", name) if event.reason == "ProvisioningFailed"][-1:]


def storage_refusal(classes: list[Any], wanted: str | None, modes: set[str]) -> str | None:
    """Why claims of class ``wanted`` (None: the cluster's default) cannot have access mode ReadWriteMany,
    when ``modes`` asks for it and the class's provisioner is one known to offer ReadWriteOnce only."""
    if "ReadWriteMany" not in modes:
        return None
    if wanted is None:
        chosen = [c for c in classes if ((c.metadata.annotations or {}).get(DEFAULT_CLASS) == "true")]
    else:
        chosen = [c for c in classes if c.metadata.name == wanted]
    if not chosen or chosen[0].provisioner not in RWO_ONLY:
        return None
    which = f"storage class {chosen[0].metadata.name}" + (" (the cluster's default)" if wanted is None else "")
    return (f"{which} is provisioned by {chosen[0].provisioner}, which offers ReadWriteOnce only, and clara-airflow's "
            "claims ask for ReadWriteMany (a service and its steps mount them from different pods). Set [clara] "
            "storage_class to a ReadWriteMany class (NFS, CephFS, EFS, Filestore, Azure Files over NFS), or set "
            "volume_access_mode and service_data_access_mode to ReadWriteOnce if every pod runs on one node")


def storage_check(api_client: Any, options: Any, with_volumes: bool, log: Any) -> str | None:
    """Why the claims about to be created cannot work (:func:`storage_refusal`), read before any is made: a
    claim asking for ReadWriteMany of a ReadWriteOnce-only class would stay Pending and its service
    unschedulable. Without permission to list StorageClasses (cluster-scoped) the check is skipped."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    modes = {options.service_data_access_mode} | ({options.volume_access_mode} if with_volumes else set())
    try:
        classes = client.StorageV1Api(api_client).list_storage_class().items
    except ApiException as exc:
        log.debug("storage classes not readable (%s %s): access modes not checked", exc.status, exc.reason)
        return None
    return storage_refusal(classes, options.storage_class, modes)


def read_claims(core: Any, namespace: str, names: list[str]) -> list[Any]:
    """The claims of ``names`` that exist."""
    from kubernetes.client.exceptions import ApiException

    found = []
    for name in names:
        try:
            found.append(core.read_namespaced_persistent_volume_claim(name, namespace))
        except ApiException:
            continue
    return found


def events_text(events: list[Any], prefix: str, data_claim: str) -> str:
    """The last events of a service's Deployment, ReplicaSets, pods and claims (all named ``prefix...``)
    and of the service data claim, for an error message."""
    lines = [f"{e.reason}: {e.message}" for e in events if e.involved_object is not None and (
        str(e.involved_object.name or "").startswith(prefix)
        or (e.involved_object.kind == "PersistentVolumeClaim" and e.involved_object.name == data_claim))][-10:]
    return ("\n--- recent events ---\n" + "\n".join(lines)) if lines else ""


def _about(events: list[Any], kind: str, name: str) -> list[Any]:
    return [e for e in events if e.involved_object is not None and e.involved_object.name == name
            and (e.involved_object.kind in (kind, None))]
