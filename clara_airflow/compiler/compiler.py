"""compile_pipeline(spec) -> PipelinePlan: edges, mounts, environment and service identities.

Pure and deterministic: no network, no Variables, no clock; the same file gives the same plan.
"""

from __future__ import annotations

import graphlib
import os
from collections.abc import Mapping
from typing import Any

from clara_airflow.compiler.export import Export, export_destinations, is_register_results
from clara_airflow.compiler.identity import service_id, volume_name
from clara_airflow.compiler.plan import MountPlan, PipelinePlan, Requests, ServicePlan, ServiceUse, StepPlan
from clara_airflow.errors import Problem, SpecError
from clara_airflow.settings import PipelineSettings, Resources
from clara_airflow.spec.crosscheck import pinned_uses, select_output
from clara_airflow.spec.defaults import merge_settings
from clara_airflow.spec.model import MODEL_VARIABLES, ContainerSpec, OperatorSpec, PipelineSpec, RequestsSpec
from clara_airflow.spec.template import identity

MODEL_SERVER = "model-server"
_MODEL_PORTS = dict(zip(MODEL_VARIABLES, (8000, 8001, 8000, 8000), strict=True))


def compile_pipeline(spec: PipelineSpec, deployment: Mapping[str, Any] | None = None, *,
                     destinations: tuple[str, ...] | None = None, gpus: int | None = None) -> PipelinePlan:
    """Turn a validated spec into a plan.

    :param spec: from :func:`clara_airflow.spec.load.load_pipeline`.
    :param deployment: flat settings of ``clara-defaults.yaml`` merged over ``[clara]`` (lower
        precedence than the pipeline's own ``x-airflow`` block).
    :param destinations: the configured DICOM destinations (``[clara] dicom_config``), for register-results.
    :param gpus: how many GPUs a Docker host has (``[clara] gpus`` as a list); None: not known here.
    :raises SpecError: when the merged settings contradict each other (a schedule with no payload).
    """
    merged = merge_settings(spec.airflow, deployment or {})
    settings = PipelineSettings.from_flat({**merged, "parameters": effective_rules(spec, merged["parameters"] or {})})
    _check_schedule(spec, settings)
    _check_node_paths(spec, settings)
    _check_batch(spec, settings)
    _check_gpus(spec, settings, gpus)
    defaults = {name: p.default for name, p in spec.all_parameters().items()}
    lowered = {op.name.lower(): op for op in spec.operators}
    upstream = {op.name: _upstream(op, lowered) for op in spec.operators}
    order = _topological_order(spec, upstream)
    services, uses = _services(spec, settings, defaults)
    by_name = {op.name: op for op in spec.operators}
    exports, warnings = _exports(spec, settings, destinations)
    steps = tuple(_step(spec, by_name[name], settings, uses.get(name, ()), upstream[name], lowered, exports)
                  for name in order)
    params = tuple((p.name, p.default) for p in spec.all_parameters().values())
    return PipelinePlan(
        dag_id=spec.name, source=spec.path, steps=steps, services=tuple(services), parameters=params,
        settings=settings, description=spec.description, pull_secrets=spec.pull_secrets,
        name_at=spec.where.get("name", default=(1, 1)), warnings=warnings,
    )


def effective_rules(spec: PipelineSpec, rules: Mapping[str, Any]) -> dict[str, Any]:
    """``x-airflow.parameters``, plus a pin to the default for every parameter that chooses an image,
    tag or service identity and has no ``enum`` of its own (whoever triggers a run may not pick those)."""
    declared = spec.all_parameters()
    found = {name: dict(rule) for name, rule in rules.items()}
    for name, at, _ in pinned_uses(spec):
        if "enum" not in found.get(name, {}) and name in declared:
            found[name] = {**found.get(name, {}), "name": declared[name].name, "enum": [declared[name].default],
                           "pinned": True, "at": list(at)}
    return found


def _check_schedule(spec: PipelineSpec, settings: PipelineSettings) -> None:
    """A scheduled run has no trigger form, so its payload folder must have a default."""
    if settings.schedule is None or settings.payload.input or settings.batch.inbox:
        return
    own = "schedule" in spec.airflow
    line, col = spec.where.get("x-airflow", default=(1, 1)) if own else (1, 1)
    source = "the x-airflow block" if own else "clara-defaults.yaml or [clara]"
    raise SpecError([Problem(spec.path, line, col, (
        f"schedule '{settings.schedule}' (from {source}) needs a default input payload: scheduled runs have "
        "no trigger form to ask for clara_payload; set payload.input in x-airflow (or in clara-defaults.yaml, "
        "[clara] payload_input), give it a batch inbox (x-airflow batch.inbox), or remove the schedule"), "V33")])


def _check_batch(spec: PipelineSpec, settings: PipelineSettings) -> None:
    """Batch mode runs on Docker, and its inbox is neither inside nor around the outputs or service data."""
    inbox = settings.batch.inbox
    if inbox is None:
        return
    line, col = spec.where.get("x-airflow", "batch", default=spec.where.get("x-airflow", default=(1, 1)))
    problem = None
    if settings.backend != "docker":
        problem = ("batch mode (x-airflow batch.inbox) runs on the Docker backend only; on Kubernetes, start one "
                   "run per study with clara_payload (the DICOM receiver does), or remove batch")
    for folder, what in ((settings.payload.output_root, "payload.output_root"),
                         (settings.services.data_dir, "services.data_dir")):
        if os.path.commonpath([inbox, folder]) in (inbox, folder):
            problem = (f"batch inbox {inbox} is, lies inside or contains {what} {folder}; studies and outputs "
                       "must live apart: move the inbox")
    if problem is not None:
        raise SpecError([Problem(spec.path, line, col, problem, "V33")])


def _check_gpus(spec: PipelineSpec, settings: PipelineSettings, gpus: int | None) -> None:
    """On Docker, a step or service cannot hold more GPUs than its host has (Kubernetes schedules them)."""
    if gpus is None or settings.backend != "docker":
        return
    problems = []
    for what, item in [(f"operator '{op.name}'", op) for op in spec.operators] + [
            (f"service '{svc.name}' of operator '{op.name}'", svc) for op in spec.operators for svc in op.services]:
        wanted = _requests(item.requests, settings.resources).gpu
        if wanted > gpus:
            line, col = item.where.get("requests", "gpu")
            problems.append(Problem(spec.path, line, col, (
                f"{what} requests {wanted} GPU(s), but a Docker host here has {gpus} ([clara] gpus); it could never "
                "start: lower requests.gpu, or list every GPU of the host in [clara] gpus"), "V26"))
    if problems:
        raise SpecError(problems)


def _check_node_paths(spec: PipelineSpec, settings: PipelineSettings) -> None:
    """On Kubernetes without ``payload.claim``, payload and outputs are node folders (hostPath volumes),
    which Pod Security "baseline" and "restricted" refuse: only with ``allow_host_paths``."""
    if settings.backend != "kubernetes" or settings.payload.claim or settings.allow_host_paths:
        return
    line, col = spec.where.get("x-airflow", default=(1, 1))
    raise SpecError([Problem(spec.path, line, col, (
        "on Kubernetes, payloads and outputs live on a PersistentVolumeClaim: set payload.claim (x-airflow, "
        "clara-defaults.yaml or [clara] payload_claim); node folders (hostPath) need allow_host_paths: true and "
        "a namespace that allows them"), "V33")])


def _upstream(op: OperatorSpec, lowered: Mapping[str, OperatorSpec]) -> tuple[str, ...]:
    """The operators named in ``op``'s ``input.from`` entries (names match case-insensitively)."""
    found: dict[str, None] = {}
    for inp in op.inputs:
        if inp.source is not None:
            found[lowered[inp.source.lower()].name] = None
    return tuple(found)


def _topological_order(spec: PipelineSpec, upstream: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Operators by depth in the graph, then by their order in the file."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, ups in upstream.items():
        sorter.add(name, *ups)
    ready = list(sorter.static_order())  # acyclic: the spec layer's V25 names any cycle with its line
    depth: dict[str, int] = {}
    for name in ready:  # upstream operators come first in a static order
        depth[name] = 1 + max((depth[u] for u in upstream[name]), default=-1)
    position = {op.name: i for i, op in enumerate(spec.operators)}
    return sorted(ready, key=lambda n: (depth[n], position[n]))


def _requests(req: RequestsSpec, defaults: Resources) -> Requests:
    pick = [getattr(req, k) if getattr(req, k) is not None else getattr(defaults, k) for k in ("cpu", "memory", "gpu")]
    return Requests(*pick)


def _exports(spec: PipelineSpec, settings: PipelineSettings, destinations: tuple[str, ...] | None
             ) -> tuple[dict[str, Export], tuple[Problem, ...]]:
    """What every register-results operator becomes, and the warnings; every problem of them at once."""
    found: dict[str, Export] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for op in spec.operators:
        if is_register_results(op.container.image):
            found[op.name] = export = export_destinations(spec, op, destinations)
            bad = list(export.problems)
            if settings.backend != "docker" and export.destinations and not bad:
                line, col = op.container.where.get("image")
                bad = [Problem(spec.path, line, col, f"operator '{op.name}': the register-results export reads the "
                               "run's folders on the Airflow worker, so it runs with the Docker backend only", "X1")]
            problems += bad
            warnings += export.warnings
    if problems:
        raise SpecError(problems)
    return found, tuple(warnings)


def _step(spec: PipelineSpec, op: OperatorSpec, settings: PipelineSettings, uses: tuple[ServiceUse, ...],
          upstream: tuple[str, ...], by_name: Mapping[str, OperatorSpec],
          exports: Mapping[str, Export]) -> StepPlan:
    mounts: list[MountPlan] = []
    for inp in op.inputs:
        if inp.source is None:
            mounts.append(MountPlan(inp.path, "payload", True))
            continue
        source = by_name[inp.source.lower()]
        chosen = select_output(source, inp)
        sub = chosen.name if chosen is not None and chosen.name else ""
        mounts.append(MountPlan(inp.path, "upstream", True, operator=source.name, sub=sub))
    for out in op.outputs:
        mounts.append(MountPlan(out.path, "output", False, operator=op.name, sub=out.name or ""))
    for svc in op.services:
        sid = _identity_id(svc.container.image, svc.container.tag, svc.container.command, spec)
        for vol in svc.volumes:
            mounts.append(MountPlan(vol.path, "volume", False, volume=volume_name(sid, vol.path)))
    return StepPlan(
        name=op.name, image=op.container.image, tag=op.container.tag, command=op.container.command,
        variables=op.variables, requests=_requests(op.requests, settings.resources), upstream=upstream,
        mounts=tuple(mounts), services=uses, description=op.description,
        export=exports[op.name].destinations if op.name in exports else (),
        skip=exports[op.name].skip if op.name in exports else "",
    )


def _identity_id(image: str, tag: str, command: tuple[str, ...], spec: PipelineSpec) -> str:
    defaults = {name: p.default for name, p in spec.all_parameters().items()}
    return service_id(*identity(image, tag, command, defaults))


def _services(spec: PipelineSpec, settings: PipelineSettings, defaults: Mapping[str, str]
              ) -> tuple[list[ServicePlan], dict[str, tuple[ServiceUse, ...]]]:
    """Group declarations by identity (section 7.4) and record which step uses which connection."""
    groups: dict[str, dict[str, Any]] = {}
    uses: dict[str, list[ServiceUse]] = {}
    for op in spec.operators:
        for svc in op.services:
            cont = svc.container
            sid = service_id(*identity(cont.image, cont.tag, cont.command, defaults))
            group = groups.setdefault(sid, _new_group(cont.image, cont.tag, cont.command))
            group["names"].setdefault(svc.name, None)
            group["consumers"].setdefault(op.name, None)
            group["http"].update({h.name: h.port for h in svc.http})
            group["volumes"].update({v.name: v.path for v in svc.volumes})
            group["variables"].update(dict(svc.variables))
            group["requests"].append(_requests(svc.requests, settings.resources))
            if cont.host_volume:
                _check_host_path(spec, cont, settings)
                group["host_mounts"] = tuple(dict.fromkeys((*group["host_mounts"], (cont.host_volume, cont.host_volume))))
            env = tuple((h.name, h.name) for h in svc.http) + tuple((v.name, v.name) for v in svc.volumes)
            uses.setdefault(op.name, []).append(ServiceUse(sid, env))
        if op.models:
            _check_model_repository(spec, op, settings)
            sid = _model_server(groups, settings)
            groups[sid]["consumers"].setdefault(op.name, None)
            groups[sid]["models"].update(dict.fromkeys(op.models))
            uses.setdefault(op.name, []).append(ServiceUse(sid, tuple((n, n) for n in MODEL_VARIABLES)))
    plans = [_service_plan(sid, g, spec.pull_secrets) for sid, g in groups.items()]
    return plans, {name: tuple(u) for name, u in uses.items()}


def _check_host_path(spec: PipelineSpec, cont: ContainerSpec, settings: PipelineSettings) -> None:
    _refuse_host_path(spec, settings, cont.where.get("hostVolumePath"),
                      f"hostVolumePath {cont.host_volume} needs a hostPath volume on Kubernetes",
                      "serve the folder from a volume")


def _check_model_repository(spec: PipelineSpec, op: OperatorSpec, settings: PipelineSettings) -> None:
    """The inference server of ``models`` reads ``models.repository`` from the node."""
    _refuse_host_path(spec, settings, op.where.key("models"),
                      f"`models` of operator '{op.name}' needs the model repository {settings.models.repository} as a "
                      "hostPath volume on Kubernetes",
                      "declare the inference server as a service with a volume connection")


def _refuse_host_path(spec: PipelineSpec, settings: PipelineSettings, at: tuple[int, int], what: str,
                      otherwise: str) -> None:
    """On Kubernetes a host folder is a hostPath volume, which Pod Security "baseline" forbids."""
    if settings.backend == "kubernetes" and not settings.allow_host_paths:
        raise SpecError([Problem(spec.path, at[0], at[1], (
            f"{what}, which namespaces under Pod Security 'baseline' or 'restricted' refuse; set allow_host_paths: "
            "true (x-airflow, clara-defaults.yaml or [clara] allow_host_paths = True) for a privileged namespace, "
            f"or {otherwise}"), "V33")])


def _new_group(image: str, tag: str, command: tuple[str, ...]) -> dict[str, Any]:
    return {"image": image, "tag": tag, "command": command, "names": {}, "consumers": {}, "http": {},
            "volumes": {}, "variables": {}, "requests": [], "models": {}, "host_mounts": ()}


def _model_server(groups: dict[str, dict[str, Any]], settings: PipelineSettings) -> str:
    models = settings.models
    repo = models.repository
    command = ("tritonserver", f"--model-repository={repo}", "--model-control-mode=poll")
    sid = service_id(models.image, models.tag, command)
    if sid not in groups:
        group = _new_group(models.image, models.tag, command)
        group["names"][MODEL_SERVER] = None
        group["http"].update(_MODEL_PORTS)
        group["requests"].append(_requests(RequestsSpec(), models.requests))
        group["host_mounts"] = ((repo, repo),)
        groups[sid] = group
    return sid


def _service_plan(sid: str, g: dict[str, Any], pull_secrets: tuple[str, ...]) -> ServicePlan:
    reqs: list[Requests] = g["requests"]
    return ServicePlan(
        id=sid, image=g["image"], tag=g["tag"], command=tuple(g["command"]), names=tuple(g["names"]),
        http=tuple(g["http"].items()), volumes=tuple(g["volumes"].items()),
        variables=tuple(g["variables"].items()),
        requests=Requests(max(r.cpu for r in reqs), max(r.memory for r in reqs), max(r.gpu for r in reqs)),
        consumers=tuple(g["consumers"]), models=tuple(g["models"]), host_mounts=g["host_mounts"],
        pull_secrets=pull_secrets,
    )
