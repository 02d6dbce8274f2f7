"""Rules that look across objects: V16, V17, V19 (repeats), V23-V25, V28 and V32."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from clara_airflow.spec.checker import PLACEHOLDER_RE, Checker
from clara_airflow.spec.model import MODEL_VARIABLES, InputSpec, OperatorSpec, OutputSpec, PipelineSpec
from clara_airflow.spec.positions import Pos
from clara_airflow.spec.source import Node
from clara_airflow.spec.template import identity


def merge_variables(c: Checker, container_vars: list[tuple[Node, Node, str]],
                    op_vars: list[tuple[Node, Node, str]], what: str
                    ) -> tuple[tuple[str, str], ...]:
    """D8: container-level variables merged under operator-level ones (the operator wins, with a warning)."""
    merged: dict[str, tuple[Node, Node, str]] = {}
    for level in (container_vars, op_vars):
        own: set[str] = set()
        for key, value, text in level:
            lower = key.value.lower()
            if lower in own:
                c.error(key, "V17", f"environment variable '{key.value}' is defined twice for {what} "
                        "(names are compared ignoring case); rename or remove one")
                continue
            own.add(lower)
            if lower in merged:
                c.warn(key, f"variable '{key.value}' of {what} overrides the container-level value")
            merged[lower] = (key, value, text)
    return tuple((k.value, text) for k, _, text in merged.values())


Locate = Callable[[], Pos]


def repeated(items: list[tuple[str, Locate]], norm: Callable[[str], str] = str.lower) -> list[tuple[str, Pos]]:
    """The items with their positions, in file order, when some normalized name repeats; else [].

    Positions are found only when there is something to report, so a valid file never looks them up."""
    if len({norm(name) for name, _ in items}) == len(items):
        return []
    return sorted(((name, locate()) for name, locate in items), key=lambda item: item[1])


def unique_names(c: Checker, names: Iterable[tuple[str, Locate]], kind: str) -> None:
    """V16: names of one kind and scope are unique ignoring case; the later one is reported."""
    seen: dict[str, Pos] = {}
    for name, at in repeated(list(names)):
        first = seen.setdefault(name.lower(), at)
        if first != at:
            c.error(at, "V16", f"duplicate {kind} name '{name}' (first at line {first[0]}); names must "
                    "be unique ignoring case")


def check_pipeline(c: Checker, spec: PipelineSpec, operator_names: set[str]) -> None:
    unique_names(c, ((op.name, partial(op.where.at, "name")) for op in spec.operators), "operator")
    _check_parameters(c, spec)
    for op in spec.operators:
        _check_operator(c, op)
    edges = _check_inputs(c, spec, operator_names)
    _check_cycles(c, spec, edges)
    _check_identities(c, spec)
    _check_parameter_rules(c, spec)


def _check_operator(c: Checker, op: OperatorSpec) -> None:
    what = f"operator '{op.name}'"
    unique_names(c, ((o.name, partial(o.where.get, "name")) for o in op.outputs if o.name),
                 f"output of {what}: output")
    unique_names(c, ((s.name, partial(s.where.at, "name")) for s in op.services), f"service of {what}: service")
    unique_names(c, ((p.name, p.where.key) for p in op.parameters), f"parameter of {what}: parameter")
    mounts: list[tuple[str, Locate]] = [(i.path, partial(i.where.at, "path")) for i in op.inputs]
    mounts += [(o.path, partial(o.where.at, "path")) for o in op.outputs if o.path]
    mounts += [(v.path, partial(v.where.at, "path")) for s in op.services for v in s.volumes]
    seen: dict[str, Pos] = {}
    for path, at in repeated(mounts, _mount_key):
        norm = _mount_key(path)
        if norm in seen:
            c.error(at, "V19", f"path '{path}' of {what} repeats the mount path at line {seen[norm][0]}; "
                    "every input, output and service volume needs its own path")
        seen.setdefault(norm, at)
    env: list[tuple[str, Locate]] = [(k, partial(op.variable_at, k)) for k, _ in op.variables]
    env += [(h.name, partial(h.where.at, "name")) for s in op.services for h in s.http]
    env += [(v.name, partial(v.where.at, "name")) for s in op.services for v in s.volumes]
    if op.models:
        env += [(name, partial(op.where.key, "models")) for name in MODEL_VARIABLES]
    first: dict[str, tuple[str, Pos]] = {}
    for name, at in repeated(env):
        if name.lower() in first:
            other = first[name.lower()]
            c.error(at, "V17", f"environment variable '{name}' of {what} is defined twice (also "
                    f"'{other[0]}' at line {other[1][0]}); rename one of them")
        else:
            first[name.lower()] = (name, at)


def _mount_key(path: str) -> str:
    return path.rstrip("/") or "/"


def _check_parameters(c: Checker, spec: PipelineSpec) -> None:
    unique_names(c, ((p.name, p.where.key) for p in spec.parameters), "parameter")
    declared = [*spec.parameters, *(p for op in spec.operators for p in op.parameters)]
    first: dict[str, str] = {}
    for param in sorted(declared, key=lambda p: p.where.key()):
        default = first.setdefault(param.name.lower(), param.default)
        if default != param.default:
            c.error(param.where.key(), "V32", f"parameter '{param.name}' is declared again with a different "
                    f"default ('{param.default}' vs '{default}'); parameters share one namespace, give "
                    "them one default or rename one")


def select_output(source: OperatorSpec, inp: InputSpec) -> OutputSpec | None:
    """Section 6.3: the output of ``source`` that ``inp`` mounts, or None."""
    if inp.name is not None:
        return next((o for o in source.outputs if o.name and o.name.lower() == inp.name.lower()), None)
    return source.outputs[0] if len(source.outputs) == 1 else None


def _check_inputs(c: Checker, spec: PipelineSpec, names: set[str]) -> list[tuple[str, str, Pos]]:
    by_name = {op.name.lower(): op for op in spec.operators}
    edges: list[tuple[str, str, Pos]] = []
    for op in spec.operators:
        for inp in op.inputs:
            if inp.source is None:
                continue
            at = inp.where.at("from")
            source = by_name.get(inp.source.lower())
            if source is None:
                if inp.source.lower() not in names:
                    c.error(at, "V23", f"input of operator '{op.name}' reads from unknown operator "
                            f"'{inp.source}'; `from` must name an operator of this pipeline")
                continue
            edges.append((source.name, op.name, at))
            _check_selection(c, spec, op, source, inp)
    return edges


def _check_selection(c: Checker, spec: PipelineSpec, op: OperatorSpec, source: OperatorSpec,
                     inp: InputSpec) -> None:
    chosen = select_output(source, inp)
    if chosen is None:
        if inp.name is not None:
            c.error(inp.where.at("name"), "V24", f"operator '{source.name}' has no output '{inp.name}' "
                    f"(input of operator '{op.name}'); outputs: "
                    f"{', '.join(o.name or '(unnamed)' for o in source.outputs) or 'none'}")
        elif not source.outputs:
            c.error(inp.where.at("from"), "V24", f"operator '{source.name}' has no outputs to read "
                    f"(input of operator '{op.name}')")
        else:
            c.error(inp.where.at("from"), "V24", f"operator '{source.name}' has several outputs; add `name:` "
                    f"to the input of operator '{op.name}' to pick one of "
                    f"{', '.join(o.name or '(unnamed)' for o in source.outputs)}")
        return
    if spec.typed and chosen.type != "shared-memory" and (inp.type, inp.element_type) != (
            chosen.type, chosen.element_type):
        c.error(inp.where.get("type"), "V24", f"type mismatch: input of operator "
                f"'{op.name}' is {inp.type}/{inp.element_type} but output '{chosen.name}' of "
                f"'{source.name}' is {chosen.type}/{chosen.element_type}")


def _check_cycles(c: Checker, spec: PipelineSpec, edges: list[tuple[str, str, Pos]]) -> None:
    succ: dict[str, list[str]] = {}
    for src, dst, _ in edges:
        succ.setdefault(src, []).append(dst)
    for src, dst, at in sorted(edges, key=lambda e: e[2]):
        path = _find_path(succ, dst, src)
        if path is not None:
            cycle = " -> ".join([src, *path])
            c.error(at, "V25", f"cycle between operators: {cycle}; an operator cannot depend on its "
                    "own output, directly or through others")
            return


def _find_path(succ: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    """A path start .. goal following edges (inclusive), or None."""
    todo: list[list[str]] = [[start]]
    seen = {start}
    while todo:
        path = todo.pop(0)
        if path[-1] == goal:
            return path
        for nxt in succ.get(path[-1], ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append([*path, nxt])
    return None


def _check_identities(c: Checker, spec: PipelineSpec) -> None:
    """V28: one identity in one file gives each connection name and variable one value."""
    defaults = {name: p.default for name, p in spec.all_parameters().items()}
    state: dict[tuple[str, str, tuple[str, ...]], dict[str, tuple[object, int]]] = {}
    for op in spec.operators:
        for svc in op.services:
            cont = svc.container
            try:
                ident = identity(cont.image, cont.tag, cont.command, defaults)
            except KeyError:
                continue
            seen = state.setdefault(ident, {})
            items: list[tuple[str, object, Pos]] = [
                (f"http:{h.name.lower()}", h.port, h.where.get("port")) for h in svc.http]
            items += [(f"volume:{v.name.lower()}", v.path, v.where.at("path")) for v in svc.volumes]
            items += [(f"var:{k.lower()}", val, svc.where.at("variables", k)) for k, val in svc.variables]
            for key, value, at in items:
                if key in seen and seen[key][0] != value:
                    kind, name = key.split(":", 1)
                    label = next(n for n in (*(h.name for h in svc.http), *(v.name for v in svc.volumes),
                                             *(k for k, _ in svc.variables)) if n.lower() == name)
                    c.error(at, "V28", f"conflict for service {ident[0]}:{ident[1]}: {kind} '{label}' is "
                            f"{value!s} here but {seen[key][0]!s} at line {seen[key][1]}; one service "
                            "identity must give each name one value")
                seen.setdefault(key, (value, at[0]))


def duplicate_pipeline(path: str, name: str, at: Pos, other: object) -> str:
    """The one message for two files defining one pipeline name (validate and the loader)."""
    return (f"{path}:{at[0]}:{at[1]}: duplicate pipeline name '{name}' (also in {other}); pipeline names must "
            "be unique ignoring case, rename one")


def placeholder_names(text: str) -> set[str]:
    """Lower-cased names of the ``${{ name }}`` placeholders in ``text``."""
    return {m.group(1).lower() for m in PLACEHOLDER_RE.finditer(text)} if "${{" in text else set()


def _check_parameter_rules(c: Checker, spec: PipelineSpec) -> None:
    """Run values are input from users who may only trigger runs: an image, a tag or a service identity
    may come from a parameter only when ``x-airflow.parameters`` lists its values (``enum``); rules
    name declared parameters, and each default obeys its own rules."""
    rules: dict[str, dict[str, object]] = spec.airflow.get("parameters", {})
    declared = spec.all_parameters()
    for lower, rule in rules.items():
        at: list[int] = rule["at"]  # type: ignore[assignment]
        if lower not in declared:
            c.error((at[0], at[1]), "V33", f"x-airflow.parameters names '{rule['name']}', which no `parameters` map "
                    "declares; declare it or remove its rules")
            continue
        problem = rule_violation(declared[lower].default, rule)
        if problem:
            c.error(declared[lower].where.key(), "V33", f"the default of parameter '{declared[lower].name}' "
                    f"{problem} (x-airflow.parameters.{rule['name']}); fix the default or the rule")
    for name, used_at, what in pinned_uses(spec):
        if "enum" not in rules.get(name, {}) and name in declared:
            c.warn(used_at, f"parameter '{name}' is used in {what}: runs may use only its default "
                   f"'{declared[name].default}', until x-airflow.parameters.{name}.enum lists the values a run may "
                   "choose (whoever triggers a run must not pick images or start new services)")


def pinned_uses(spec: PipelineSpec) -> list[tuple[str, Pos, str]]:
    """Parameters (lower-cased) used in an operator's image or tag, or in a service identity, with the
    position and what they choose: such a parameter takes only values its ``enum`` lists."""
    found = []
    for op in spec.operators:
        uses = [(op.container, {"image": op.container.image, "tag": op.container.tag},
                 f"the image of operator '{op.name}'")]
        uses += [(svc.container, {"image": svc.container.image, "tag": svc.container.tag,
                                  "command": " ".join(svc.container.command)},
                  f"the identity (image, tag, command) of service '{svc.name}'") for svc in op.services]
        for cont, fields, what in uses:
            for key, text in fields.items():
                found += [(name, cont.where.get(key), what) for name in sorted(placeholder_names(text))]
    return found


def rule_violation(value: str, rule: Mapping[str, object]) -> str:
    """Why ``value`` breaks ``rule`` (``enum``, ``pattern``, ``max_length``), or ''."""
    enum = rule.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"'{value[:80]}' is not one of {', '.join(map(str, enum))}"
    pattern = rule.get("pattern")
    if isinstance(pattern, str) and not re.fullmatch(pattern, value):
        return f"'{value[:80]}' does not match the pattern {pattern}"
    limit = rule.get("max_length")
    if isinstance(limit, int) and len(value) > limit:
        return f"is {len(value)} characters long, over max_length {limit}"
    return ""
