"""The one rule that turns a clara-airflow error into an Airflow task failure, for every operator."""

from __future__ import annotations

from clara_airflow.airflow_compat import AirflowException, AirflowFailException
from clara_airflow.errors import ClaraAirflowError, ServiceError

ERROR_KEY = "error"  # the XCom a failed ensure task leaves: a batch run's summary fails the run with it


def task_error(exc: ClaraAirflowError, where: str) -> AirflowException:
    """``where: exc`` as the exception to raise: a service that would not start (or stopped) may come
    up on a retry, so it is an ``AirflowException`` and uses the task's retries; anything else is the run's
    own input (conf, parameters, payload, a host folder), which no retry can mend, so the task fails at
    once (``AirflowFailException``)."""
    kind = AirflowException if isinstance(exc, ServiceError) else AirflowFailException
    return kind(f"{where}: {exc}")
