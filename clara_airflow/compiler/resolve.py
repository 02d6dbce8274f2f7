"""Parameter values applied to a plan: what a run (or ``inspect --param``) actually starts."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from clara_airflow.compiler.identity import service_id, service_name, volume_name
from clara_airflow.compiler.plan import MountPlan, PipelinePlan, ServicePlan, StepPlan
from clara_airflow.errors import CompileError
from clara_airflow.spec.checker import valid_image, valid_tag
from clara_airflow.spec.crosscheck import placeholder_names, rule_violation
from clara_airflow.spec.template import substitute

MAX_VALUE_LENGTH = 4096
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh"})
# Characters a shell gives a meaning to: command separators, substitutions, quotes, globs, redirections.
_SHELL_META = re.compile(r"[;&|<>()$`\\\"'\n\r*?\[\]{}!#~]")
Rules = Mapping[str, Mapping[str, object]]


# conf keys of a run that are not pipeline parameters: the payload folder, and a DICOM run's priority
# (informational: the scheduler reads it from the run id, see clara_airflow.priority)
RUN_KEYS = ("clara_payload", "clara_priority")


def parameter_values(declared: Iterable[Sequence[str]], given: Mapping[str, object],
                     rules: Rules | None = None) -> dict[str, str]:
    """Defaults overridden by ``given`` (names compared ignoring case), keyed by lower-cased name.

    A run's values come from whoever triggers it: each is checked against its ``x-airflow.parameters``
    rules again here (the trigger form checks them first), and bounded in length.
    """
    declared = [tuple(pair) for pair in declared]
    values = {name.lower(): default for name, default in declared}
    for name, value in given.items():
        if name in RUN_KEYS:
            continue
        if name.lower() not in values:
            known = ", ".join(n for n, _ in declared) or "none"
            raise CompileError(f"unknown parameter '{name}'; this pipeline declares: {known}")
        text = "" if value is None else str(value)
        if len(text) > MAX_VALUE_LENGTH or "\0" in text:
            raise CompileError(f"parameter '{name}' is over {MAX_VALUE_LENGTH} characters or holds a NUL "
                               "character; give a shorter value")
        values[name.lower()] = text
    for lower, rule in (rules or {}).items():
        problem = rule_violation(values.get(lower, ""), rule) if lower in values else ""
        if problem:
            raise CompileError(f"parameter '{rule.get('name', lower)}': {problem} "
                               f"(x-airflow.parameters.{rule.get('name', lower)}); trigger the run with an allowed value")
    return values


def runs_shell(command: Sequence[str]) -> bool:
    """``sh -c ...``, ``bash -ec ...``, ``/bin/sh -c``: the command hands a string to a shell."""
    if not command:
        return False
    first = command[0].rsplit("/", 1)[-1]
    return first in SHELLS and any(a.startswith("-") and not a.startswith("--") and "c" in a[1:]
                                   for a in command[1:])


def check_shell_values(command: Sequence[str], variables: Iterable[tuple[str, str]], values: Mapping[str, str],
                       rules: Rules | None, where: str) -> None:
    """In a command that runs a shell, a parameter without a ``pattern`` or ``enum`` rule may not carry
    shell metacharacters or newlines (through the command or, via ``$(NAME)``, a variable)."""
    if not runs_shell(command):
        return
    used = set().union(*(placeholder_names(c) for c in command), *(placeholder_names(v) for _, v in variables))
    for name in sorted(used):
        rule = (rules or {}).get(name, {})
        if "enum" in rule or "pattern" in rule:
            continue
        bad = _SHELL_META.search(values.get(name, ""))
        if bad:
            raise CompileError(
                f"{where}: parameter '{name}' holds {bad.group(0)!r}, and the command runs a shell "
                f"({command[0]} -c), where that character would change what runs; give a value without shell "
                f"characters, or allow such values with x-airflow.parameters.{name}.pattern or enum")


def check_image(image: str, tag: str, where: str) -> None:
    """V18 after substitution: a run fails with the offending value and where it came from."""
    if not valid_image(image):
        raise CompileError(f"{where}: image '{image}' (after parameter substitution) is not a valid "
                           "image name without tag or digest; fix the parameter value")
    if not valid_tag(tag):
        raise CompileError(f"{where}: tag '{tag}' (after parameter substitution) is not a valid image "
                           "tag; fix the parameter value")


def resolve_service(svc: ServicePlan, values: Mapping[str, str], rules: Rules | None = None) -> ServicePlan:
    check_shell_values(svc.command, svc.variables, values, rules, f"service {', '.join(svc.names)}")
    image, tag = substitute(svc.image, values), substitute(svc.tag, values)
    check_image(image, tag, f"service {', '.join(svc.names)}")
    command = tuple(substitute(c, values) for c in svc.command)
    return dataclasses.replace(
        svc, id=service_id(image, tag, command), image=image, tag=tag, command=command,
        variables=tuple((k, substitute(v, values)) for k, v in svc.variables),
    )


def resolve_step(step: StepPlan, values: Mapping[str, str], ids: Mapping[str, str],
                 rules: Rules | None = None) -> StepPlan:
    """Substitute a step's image, tag, command and variables; ``ids`` maps compile-time ids to run ids."""
    check_shell_values(step.command, step.variables, values, rules, f"operator {step.name}")
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
        if mount.volume.startswith(service_name(old) + "-") and old != new:
            return dataclasses.replace(mount, volume=volume_name(new, mount.target))
    return mount


def resolve_plan(plan: PipelinePlan, given: Mapping[str, object]) -> PipelinePlan:
    rules = plan.settings.parameters
    values = parameter_values(plan.parameters, given, rules)
    services = tuple(resolve_service(s, values, rules) for s in plan.services)
    ids = {old.id: new.id for old, new in zip(plan.services, services, strict=True)}
    steps = tuple(resolve_step(s, values, ids, rules) for s in plan.steps)
    params = tuple((name, values[name.lower()]) for name, _ in plan.parameters)
    return dataclasses.replace(plan, steps=steps, services=services, parameters=params)
