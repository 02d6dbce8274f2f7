"""load_pipeline(path) -> PipelineSpec: every rule of clara-pdl.md section 13, all problems at once.

The spec layer, from the bottom: ``source`` reads the YAML safely, ``positions`` finds the (line, column) of
any field when asked, ``fields`` is the field table of the body, ``reader`` the generic node reader,
``containers``/``folders``/``connections`` read the parts of an operator, this module the pipeline and
its operators, and ``crosscheck`` the rules across objects.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clara_airflow.errors import SpecError
from clara_airflow.spec import crosscheck
from clara_airflow.spec.checker import Checker, Fields, is_null
from clara_airflow.spec.connections import ServiceReader
from clara_airflow.spec.defaults import parse_airflow_block
from clara_airflow.spec.fields import OPERATOR, PIPELINE
from clara_airflow.spec.model import ERROR_DAG_PREFIX, MAX_DAG_ID, REAPER_DAG_ID, OperatorSpec, PipelineSpec
from clara_airflow.spec.positions import Where
from clara_airflow.spec.reader import peek_name
from clara_airflow.spec.source import Node, SequenceNode, read_document, read_pipeline_bytes

log = logging.getLogger(__name__)


def load_pipeline(path: str | Path, data: bytes | None = None) -> PipelineSpec:
    """Read and validate one pipeline file.

    :param path: the file; also the name used in messages.
    :param data: the file's bytes, when already read.
    :raises SpecError: listing every problem, sorted, each as ``PATH:LINE:COL: message``.
    """
    name = str(path)
    root = read_document(name, read_pipeline_bytes(path) if data is None else data)
    checker = Checker(name)
    spec = _Reader(checker).pipeline(root)
    if checker.problems or spec is None:
        raise SpecError(checker.problems)
    for warning in sorted(checker.warnings):
        log.warning("%s", warning)
    return spec


class _Reader(ServiceReader):
    """The whole body: the pipeline, its operators, and (through the readers it extends) everything in them."""

    def pipeline(self, root: Node) -> PipelineSpec | None:
        c = self.c
        fields = self.fields(root, PIPELINE, "the pipeline")
        if fields is None:
            return None
        self.version = self._api_version(fields) or "0.4.0"
        name = self._opt(fields, "name", lambda n: c.name(n, "pipeline name", max_len=MAX_DAG_ID))
        if name is not None and (name.lower() == REAPER_DAG_ID or name.lower().startswith(ERROR_DAG_PREFIX)):
            c.error(fields["name"][1], "V14", f"pipeline name '{name}' is reserved by clara-airflow (its own "
                    f"{'service reaper' if name.lower() == REAPER_DAG_ID else 'broken-file'} DAG); rename the pipeline")
            name = None
        orchestrator = self._opt(fields, "orchestrator", lambda n: c.string(n, "orchestrator"))
        if orchestrator is not None and orchestrator.lower() not in ("clara", "argo"):
            c.error(fields["orchestrator"][1], "V13",
                    f"orchestrator '{orchestrator}' is not supported; use Clara or Argo (or leave it out)")
        description = self._opt(fields, "description", lambda n: c.string(n, "description", free_text=True))
        secrets = [c.string(n, "pull-secrets item") for n in self._seq(fields, "pull-secrets")]
        self.top_params = self._parameters(fields, "the pipeline")
        c.scope = {p.name.lower() for p in self.top_params}
        airflow = parse_airflow_block(c, fields["x-airflow"][1]) if "x-airflow" in fields else {}
        operators = self._operators(fields)
        spec = PipelineSpec(
            path=c.path, api_version=self.version, name=name or "", operators=tuple(operators),
            description=description or "", orchestrator=orchestrator,
            pull_secrets=tuple(s for s in secrets if s), parameters=tuple(self.top_params),
            airflow=airflow, warnings=tuple(sorted(c.warnings)), where=Where(root),
        )
        crosscheck.check_pipeline(c, spec, self.operator_names)
        return None if c.problems or name is None else spec

    def _operators(self, fields: Fields) -> list[OperatorSpec]:
        if "operators" not in fields or is_null(fields["operators"][1]):
            return []
        node = fields["operators"][1]
        nodes = self.c.sequence(node, "`operators`")
        if not nodes and isinstance(node, SequenceNode):
            self.c.error(node, "V11", "`operators` must be a non-empty list of operators")
        operators = []
        self.operator_names = {n.lower() for n in map(peek_name, nodes) if n}
        for node in nodes:
            if self._is_import(node):
                continue
            op = self._read(self._operator, node, "an operator")
            if op is not None:
                operators.append(op)
        return operators

    def _operator(self, node: Node) -> OperatorSpec | None:
        c = self.c
        label = peek_name(node)
        what = f"operator '{label}'" if label else "an operator"
        fields = self.fields(node, OPERATOR, what)
        if fields is None:
            return None
        name = self._opt(fields, "name", lambda n: c.name(n, "operator name", max_len=250))
        self._api_version(fields, what)
        own_params = self._parameters(fields, what)
        outer_scope = c.scope
        c.scope = set(outer_scope) | {p.name.lower() for p in own_params}
        try:
            container, container_vars = self._container(fields, what, allow_variables=True)
            variables = self._variables(fields, what)
            requests = self._requests(fields, what)
            inputs = [i for n in self._seq(fields, "input") if (i := self._read(self._input, n, "an input", what))]
            outputs = self._outputs(fields, what)
            services = [s for n in self._seq(fields, "services")
                        if (s := self._read(self._service, n, "a service", what))]
            models = self._models(fields, what)
        finally:
            c.scope = outer_scope
        if name is None or container is None:
            return None
        merged = crosscheck.merge_variables(c, container_vars, variables, what)
        return OperatorSpec(
            name=name, container=container, inputs=tuple(inputs), outputs=tuple(outputs),
            requests=requests, variables=merged, services=tuple(services), models=tuple(models),
            parameters=tuple(own_params),
            description=self._opt(fields, "description",
                                  lambda n: c.string(n, "description", free_text=True)) or "",
            where=Where(node),
        )
