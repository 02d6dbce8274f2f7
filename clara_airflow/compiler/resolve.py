"""Parameter values applied to a plan: what a run (or ``inspect --param``) actually starts."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from clara_airflow.compiler.identity import service_id, volume_name
from clara_airflow.compiler.plan import MountPlan, PipelinePlan, ServicePlan, StepPlan
from clara_airflow.errors import CompileError
from clara_airflow.spec.template import substitute

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def parameter_values(declared: Iterable[Sequence[str]], given: Mapping[str, object]) -> dict[str, str]:
    """Defaults overridden by ``given`` (names compared ignoring case), keyed by lower-cased name."""
    declared = [tuple(pair) for pair in declared]
    values = {name.lower(): default for name, default in declared}
    for name, value in given.items():
        if name == "clara_payload":
            continue
        if name.lower() not in values:
            known = ", ".join(n for n, _ in declared) or "none"
            raise CompileError(f"unknown parameter '{name}'; this pipeline declares: {known}")
        values[name.lower()] = "" if value is None else str(value)
    return values


def check_image(image: str, tag: str, where: str) -> None:
    """V18 after substitution: a run fails with the offending value and where it came from."""
    last = image.rsplit("/", 1)[-1]
    if not image or re.search(r"[\s@]", image) or ":" in last:
        raise CompileError(f"{where}: image '{image}' (after parameter substitution) is not a valid "
                           "image name without tag or digest; fix the parameter value")
    if not _TAG_RE.fullmatch(tag):
        raise CompileError(f"{where}: tag '{tag}' (after parameter substitution) is not a valid image "
                           "tag; fix the parameter value")


def resolve_service(svc: ServicePlan, values: Mapping[str, str]) -> ServicePlan:
    image, tag = substitute(svc.image, values), substitute(svc.tag, values)
    check_image(image, tag, f"service {', '.join(svc.names)}")
    command = tuple(substitute(c, values) for c in svc.command)
    return dataclasses.replace(
        svc, id=service_id(image, tag, command), image=image, tag=tag, command=command,
        variables=tuple((k, substitute(v, values)) for k, v in svc.variables),
    )


def resolve_step(step: StepPlan, values: Mapping[str, str], ids: Mapping[str, str]) -> StepPlan:
    """Substitute a step's image, tag, command and variables; ``ids`` maps compile-time ids to run ids."""
    image, tag = substitute(step.image, values), substitute(step.tag, values)
    check_image(image, tag, f"operator {step.name}")
    mounts = tuple(_remap_volume(m, ids) for m in step.mounts)
    return dataclasses.replace(
        step, image=image, tag=tag, command=tuple(substitute(c, values) for c in step.command),
        variables=tuple((k, substitute(v, values)) for k, v in step.variables), mounts=mounts,
        services=tuple(dataclasses.replace(u, service=ids.get(u.service, u.service)) for u in step.services),
    )


def _remap_volume(mount: MountPlan, ids: Mapping[str, str]) -> MountPlan:
    for old, new in ids.items():
        if mount.volume.startswith(f"clara-svc-{old}-") and old != new:
            return dataclasses.replace(mount, volume=volume_name(new, mount.target))
    return mount


def resolve_plan(plan: PipelinePlan, given: Mapping[str, object]) -> PipelinePlan:
    values = parameter_values(plan.parameters, given)
    services = tuple(resolve_service(s, values) for s in plan.services)
    ids = {old.id: new.id for old, new in zip(plan.services, services, strict=True)}
    steps = tuple(resolve_step(s, values, ids) for s in plan.steps)
    params = tuple((name, values[name.lower()]) for name, _ in plan.parameters)
    return dataclasses.replace(plan, steps=steps, services=services, parameters=params)
