"""Exception hierarchy of clara-airflow: every error the package raises derives from ClaraAirflowError."""

from __future__ import annotations

from dataclasses import dataclass, field


class ClaraAirflowError(Exception):
    """Base class of every clara-airflow error."""


@dataclass(frozen=True, order=True)
class Problem:
    """One positioned finding in a pipeline file.

    :param path: the file, as given to the loader.
    :param line: 1-based line.
    :param col: 1-based column.
    :param message: what is wrong and, where one helps, how to fix it.
    :param rule: the rule of clara-pdl.md section 13 (``V9``), empty for warnings.
    """

    path: str
    line: int
    col: int
    message: str
    rule: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class SpecError(ClaraAirflowError, ValueError):
    """A pipeline file breaks one or more rules; ``problems`` lists them, sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def path(self) -> str:
        return self.problems[0].path

    @property
    def line(self) -> int:
        return self.problems[0].line

    @property
    def col(self) -> int:
        return self.problems[0].col


class CompileError(ClaraAirflowError):
    """A valid spec that cannot become a plan (raised at run time for template values)."""


class BackendNotInstalledError(ClaraAirflowError, ImportError):
    """A backend's Python packages are missing; the message names the pip extra to install."""

    def __init__(self, backend: str, missing: str) -> None:
        super().__init__(
            f"the {backend} backend needs the package '{missing}', which is not installed; "
            f"install it with: pip install 'clara-airflow[{backend}]'"
        )


class ServiceError(ClaraAirflowError):
    """A shared service could not be started, found or made ready; ``logs`` holds its last lines."""

    def __init__(self, message: str, *, logs: str = "") -> None:
        self.logs = logs
        text = message if not logs else f"{message}\n--- last service log lines ---\n{logs}"
        super().__init__(text)
