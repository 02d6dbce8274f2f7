"""The single task of a broken pipeline's placeholder DAG: it fails with the file's errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowFailException


class PipelineErrorOperator(BaseOperator):
    """Fails at once, without retries, with the pipeline file's positioned errors."""

    template_fields: Sequence[str] = ()
    ui_color = "#ffb3b3"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Any) -> None:
        raise AirflowFailException(f"this Clara pipeline file is broken; fix it and the DAG reloads:\n{self.message}")
