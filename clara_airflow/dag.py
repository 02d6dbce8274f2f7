"""build_dag(plan) -> DAG: the only module that creates tasks and draws edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clara_airflow.backends.registry import get_backend
from clara_airflow.compiler.identity import service_name
from clara_airflow.compiler.plan import PipelinePlan, ServicePlan, StepPlan
from clara_airflow.compiler.resolve import MAX_VALUE_LENGTH
from clara_airflow.settings import Deployment, Options

PRIORITY_STRATEGY = "clara_airflow.priority.RunPriority"  # by import path: DAG files never import it


def build_dag(plan: PipelinePlan, deployment: Deployment | None = None) -> Any:
    """Create the Airflow DAG of one compiled pipeline.

    :param plan: from :func:`clara_airflow.compiler.compiler.compile_pipeline`.
    :param deployment: the ``[clara]`` deployment-only options (Docker URL, network, Kubernetes settings).
    """
    # ParamsDict is public in airflow.sdk, resolved lazily there, which mypy does not follow
    from airflow.sdk import DAG, ParamsDict, TaskGroup  # type: ignore[attr-defined]

    from clara_airflow.operators.batch import SELECT, SelectStudiesOperator
    from clara_airflow.operators.ensure_service import GROUP, EnsureServiceOperator, ensure_task_id
    from clara_airflow.operators.release_leases import ReleaseLeasesOperator
    from clara_airflow.operators.steps import StepTasks

    s = plan.settings
    options = Options(s, deployment or Deployment())
    get_backend(s.backend, options)  # the backend's packages are installed, or an install hint
    step_tasks = StepTasks(s.backend, options)
    dag = DAG(
        dag_id=plan.dag_id, description=_summary(plan), doc_md=render_doc(plan), schedule=s.schedule,
        start_date=_start_date(s.start_date), catchup=s.catchup, max_active_runs=s.max_active_runs,
        tags=sorted({"clara", *s.tags}),
        dagrun_timeout=timedelta(seconds=s.run_timeout) if s.run_timeout else None,
        default_args={"owner": s.owner, "retries": s.retries,
                      "retry_delay": timedelta(seconds=s.retry_delay),
                      # x-airflow.timeout: a step over its time fails, and its container or pod is removed
                      "execution_timeout": timedelta(seconds=s.timeout),
                      # a DICOM run's priority (in its run id) orders queued tasks: see clara_airflow.priority
                      "weight_rule": PRIORITY_STRATEGY},
    )
    batch = s.batch.inbox is not None
    with dag:
        select = SelectStudiesOperator(task_id=SELECT, options=options, doc_md=_batch_doc(plan)) if batch else None
        ensure: dict[str, Any] = {}
        release = None
        if plan.services:
            with TaskGroup(GROUP, tooltip="Shared services, started once per identity"):
                for svc in plan.services:
                    ensure[svc.id] = EnsureServiceOperator(
                        task_id=ensure_task_id(svc.id), service=svc,
                        parameters=[list(p) for p in plan.parameters], options=options,
                        doc_md=_service_doc(svc), studies_from=SELECT if batch else None,
                        execution_timeout=timedelta(seconds=s.services.start_timeout + 120),
                    )
                release = ReleaseLeasesOperator(
                    task_id="release_leases", services={sid: task.task_id for sid, task in ensure.items()},
                    doc_md="Releases this run's leases on its services (a teardown: runs whatever happened).")
        if select is None:
            steps = {step.name: step_tasks.build(step, plan) for step in plan.steps}
            draw_edges(plan.steps, steps, ensure)
        else:
            steps = _branches(plan, step_tasks, options, select, ensure)
    # Params are given to the DAG once its tasks exist: each operator class layer would otherwise
    # deep-copy every Param into the task (a third of the build time). Tasks read them at run time
    # from the DAG (``process_params`` merges dag.params, then task params, then the run's conf).
    dag.params = ParamsDict(_params(plan))
    if release is not None:
        list(steps.values()) >> release
        release.as_teardown(setups=list(ensure.values()))
    return dag


def _branches(plan: PipelinePlan, step_tasks: Any, options: Options, select: Any, ensure: dict[str, Any]
              ) -> dict[str, Any]:
    """Batch mode: one mapped branch per study (the pipeline's steps, then the study's record), and the
    run's summary. The ensure tasks run once for the whole batch, after the studies are chosen."""
    from airflow.sdk import task_group

    from clara_airflow.operators.batch import BRANCH, RECORD, SUMMARY, BatchSummaryOperator, RecordStudyOperator

    built: dict[str, Any] = {}

    @task_group(group_id=BRANCH, tooltip="One branch per study of the batch")
    def branch(study: Any) -> Any:
        steps = {step.name: step_tasks.build(step, plan, study=study) for step in plan.steps}
        draw_edges(plan.steps, steps, ensure)
        record = RecordStudyOperator(task_id=RECORD, steps=[t.task_id for t in steps.values()], options=options,
                                     study=study, doc_md="Records how this study's branch ended in the ledger.")
        list(steps.values()) >> record
        built.update(steps)
        return record

    records = branch.expand(study=select.output)
    for task in ensure.values():
        select >> task
    summary = BatchSummaryOperator(task_id=SUMMARY, record=f"{BRANCH}.{RECORD}", options=options,
                                   ensure=[task.task_id for task in ensure.values()],
                                   doc_md="Writes batch-summary.json; fails the run when any study failed.")
    records >> summary
    return built


def draw_edges(plan_steps: tuple[StepPlan, ...], steps: dict[str, Any], ensure: dict[str, Any]) -> None:
    """``from`` inputs give upstream -> step; each declared service gives ensure -> step."""
    for step in plan_steps:
        for upstream in step.upstream:
            steps[upstream] >> steps[step.name]
        for use in step.services:
            ensure[use.service] >> steps[step.name]


def _start_date(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _params(plan: PipelinePlan) -> dict[str, Any]:
    from airflow.sdk import Param

    payload = plan.settings.payload.input
    described = ("Absolute path of the input payload folder. It is mounted read-only at every input "
                 "without `from`.")
    if plan.settings.batch.inbox:  # batch mode: an empty form processes the inbox; a folder, just that folder
        first: Any = Param(None, type=["null", "string"], title="Input payload folder (optional)", minLength=1,
                           description=described + f" Leave empty to process the new studies of {plan.settings.batch.inbox}.")
    elif payload:
        first = Param(payload, type="string", title="Input payload folder", description=described, minLength=1)
    else:
        first = Param(type="string", title="Input payload folder", description=described + " Required.", minLength=1)
    params: dict[str, Any] = {"clara_payload": first}
    rules = plan.settings.parameters
    for name, default in plan.parameters:
        params[name] = Param(default, type="string", title=name,
                             description=f"Clara pipeline parameter `{name}` (default `{default}`), "
                                         "substituted into ${{ " + name + " }} placeholders.",
                             **param_schema(rules.get(name.lower(), {})))
    return params


def param_schema(rule: dict[str, Any]) -> dict[str, Any]:
    """``x-airflow.parameters`` rules as JSON-schema keywords of the trigger form's Param, so Airflow
    refuses a bad value before the run starts (the run checks again). A pattern must match the whole value."""
    schema: dict[str, Any] = {"maxLength": int(rule.get("max_length", MAX_VALUE_LENGTH))}
    if "enum" in rule:
        schema["enum"] = list(rule["enum"])
    if "pattern" in rule:
        schema["pattern"] = f"^(?:{rule['pattern']})$"
    return schema


def _summary(plan: PipelinePlan) -> str:
    first = plan.description.strip().splitlines()[0] if plan.description.strip() else ""
    return (first or f"Clara pipeline from {plan.source}")[:200]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_doc(plan: PipelinePlan) -> str:
    """Markdown shown on the DAG page: description, operators, services, parameters and layout."""
    lines = [f"# Clara pipeline `{plan.dag_id}`", "", plan.description.strip() or "_No description._", "",
             f"Source: `{plan.source}` (backend: {plan.settings.backend})", "", "## Operators", "",
             "| operator | image | requests | after | services |", "|---|---|---|---|---|"]
    for step in plan.steps:
        req = step.requests
        if step.skip:
            lines.append(f"| `{step.name}` | skipped at run time: {_cell(step.skip)} | — | "
                         f"{', '.join(step.upstream) or '—'} | — |")
            continue
        lines.append(f"| `{step.name}` | `{_cell(step.image)}:{_cell(step.tag)}` | {req.cpu} CPU, {req.memory} MiB, "
                     f"{req.gpu} GPU | {', '.join(step.upstream) or '—'} | "
                     f"{', '.join(service_name(u.service) for u in step.services) or '—'} |")
    if plan.services:
        lines += ["", "## Services (shared across pipelines and runs)", "",
                  "| instance | image | command | connections | used by |", "|---|---|---|---|---|"]
        for svc in plan.services:
            conns = ", ".join(f"`{k}`={v}" for k, v in svc.connections.items()) or "—"
            lines.append(f"| `{service_name(svc.id)}` | `{_cell(svc.image)}:{_cell(svc.tag)}` | "
                         f"`{_cell(' '.join(svc.command)) or '(image default)'}` | {conns} | "
                         f"{', '.join(svc.consumers)} |")
    if plan.parameters:
        lines += ["", "## Parameters", "", "| name | default |", "|---|---|"]
        lines += [f"| `{n}` | `{_cell(d)}` |" for n, d in plan.parameters]
    root = f"{plan.settings.payload.output_root}/{plan.dag_id}/<run id>"
    lines += ["", "## Outputs", "", f"`{root}/<operator>/[<output name>]` — every run writes to its own folder."]
    if plan.settings.batch.inbox:
        lines += ["", f"Batch mode: each run takes the new complete studies of `{plan.settings.batch.inbox}` "
                  f"(one branch each) and writes `{root}/<study>/<operator>/` and `{root}/batch-summary.json`; "
                  "a run triggered with `clara_payload` processes just that folder."]
    return "\n".join(lines)


def _batch_doc(plan: PipelinePlan) -> str:
    b = plan.settings.batch
    return (f"Claims this run's studies: each complete sub-folder of `{b.inbox}` not yet done (a `.complete` file, "
            f"or nothing changed for {b.quiet_seconds} s), at most {b.max_studies}. With `clara_payload` in the "
            "run's conf, just that folder.")


def _service_doc(svc: ServicePlan) -> str:
    return (f"Ensures the shared service `{service_name(svc.id)}` (`{svc.image}:{svc.tag}`) runs and is ready, "
            f"then hands its connection values to {', '.join(svc.consumers)}.")
