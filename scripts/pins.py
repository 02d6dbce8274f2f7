"""Every Python environment the project's scripts build, each fully pinned by a file in the repository.

    .venv/bin/python scripts/pins.py check              # CI: each environment resolves to pinned versions only
    python3 scripts/pins.py check --installed 3.1.8     # only compare a built venv with its file (matrix.sh)
    python3 scripts/pins.py file 3.1.8                  # the pin file of an environment or Airflow version
    .venv/bin/python scripts/pins.py refresh [NAME ...]  # re-resolve on this machine and rewrite the pin files

``check`` asks pip (``install --dry-run --ignore-installed --report``, nothing is installed) what each
environment would install with its pin file, and fails when any package is missing from the file or
resolves to another version than the file says; it also compares every venv already built here
(``.venv``, ``.matrix/airflow-*``) with its file (``pip freeze``). A new release on the package index
can then change nothing: every name is pinned, and pip, setuptools and wheel are pinned too (projects
are installed with ``--no-build-isolation``, so no build dependency is fetched unpinned).

``refresh`` builds a fresh venv per environment in a temporary folder, resolves it with only the hints
below (the pins that a version is known to need), and writes ``pip freeze --all`` to its file. After a
refresh, run ``bash scripts/test.sh`` and ``bash scripts/matrix.sh`` and commit the files if both pass.
The main file is refreshed first: the matrix environments take our direct dependencies from it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = "constraints.txt"
BUILD_TOOLS = ["pip", "setuptools", "wheel"]
MUTMUT = "mutmut==2.5.1"  # scripts/mutation.sh
# what scripts/matrix.sh installs beside Airflow (the project's test tools, without ruff/mypy)
MATRIX_EXTRAS = ".[docker,kubernetes,dicom]"
MATRIX_TOOLS = ["pytest", "hypothesis", "kmock", "pytest-asyncio", "playwright"]
# Our direct dependencies: a matrix environment takes these versions from the main file, so every
# Airflow version is tested with the same docker, kubernetes, DICOM and test libraries.
DIRECT = re.compile(r"^(apache-airflow-providers-[a-z-]+|docker|kubernetes|pynetdicom|pydicom|pyyaml|kmock|pytest"
                    r"|hypothesis|pytest-asyncio|playwright)$")


@dataclass(frozen=True)
class Environment:
    """One environment: its pin file, the Airflow it runs, what is installed, and who builds it.

    :param hints: pins a fresh resolution needs (a version known to break).
    :param from_main: a matrix environment: on refresh, take our direct dependencies and these names at
        the main file's versions.
    :param checks: the installs to verify against the file (each a list of requirements).
    """

    name: str
    file: str
    airflow: str
    install: list[str]
    used_by: str
    hints: list[str] = field(default_factory=list)
    from_main: tuple[str, ...] | None = None
    checks: tuple[tuple[str, ...], ...] = ()


ENVIRONMENTS = [
    Environment("main", MAIN, "3.3.2", [".[test,cluster]", MUTMUT],
                "scripts/setup.sh (.venv: tests, demo), scripts/cluster.sh ([cluster]), scripts/mutation.sh "
                "(mutmut), scripts/matrix.sh 3.3.2, docker/airflow/Dockerfile ([all])",
                checks=((".[test,cluster]", MUTMUT), (".[all]",), (MATRIX_EXTRAS, *MATRIX_TOOLS))),
    # Airflow 3.1 sets an attribute on cryptography's MultiFernet, which cryptography 51 no longer allows:
    # every Variable write then fails (clara_airflow.versions.crypto_problem says so at start).
    Environment("airflow-3.1.8", "constraints/airflow-3.1.8.txt", "3.1.8", [MATRIX_EXTRAS, *MATRIX_TOOLS],
                "scripts/matrix.sh 3.1.8 (scripts/test.sh runs it)", hints=["cryptography<51"], from_main=()),
    # 3.2, unpinned, resolves fastapi 0.165 and cadwyn 9 and its api-server then cannot build its routes.
    Environment("airflow-3.2.2", "constraints/airflow-3.2.2.txt", "3.2.2", [MATRIX_EXTRAS, *MATRIX_TOOLS],
                "scripts/matrix.sh 3.2.2", from_main=("fastapi", "cadwyn", "pydantic", "pydantic-core")),
]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a pin file; any line that is not ``name==version`` is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~]+)", line)
        if match is None:
            raise SystemExit(f"{path.relative_to(REPO)}:{number}: not an exact pin: {raw!r} (write name==version)")
        pins[canonical(match[1])] = match[2]
    return pins


def pip(python: Path | str, *args: str, capture: bool = False) -> str:
    done = subprocess.run([str(python), "-m", "pip", *args], cwd=REPO, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if done.returncode:
        raise SystemExit(f"pip {' '.join(args[:3])} ... failed (exit {done.returncode})")
    return done.stdout or ""


def resolve(env: Environment, requirements: tuple[str, ...], pins_file: Path) -> list[tuple[str, str]]:
    """What pip would install for ``requirements`` with the pin file, nothing installed (name, version)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        pip(sys.executable, "install", "--dry-run", "--ignore-installed", "--no-build-isolation", "--quiet",
            "--disable-pip-version-check", "--report", str(report), "-c", str(pins_file),
            f"apache-airflow=={env.airflow}", *requirements)
        data = json.loads(report.read_text())
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in data["install"]]


def check(envs: list[Environment], installed_only: bool = False) -> int:
    problems: list[str] = []
    for env in envs:
        path = REPO / env.file
        pins = read_pins(path)
        for tool in BUILD_TOOLS:
            if tool not in pins:
                problems.append(f"{env.file}: {tool} is not pinned (it installs the rest)")
        for requirements in () if installed_only else env.checks or (tuple(env.install),):
            found = resolve(env, requirements, path)
            unpinned = [f"{n}=={v}" for n, v in found if canonical(n) != "clara-airflow" and pins.get(canonical(n)) != v]
            print(f"[pins] {env.name}: {' '.join(requirements)} -> {len(found)} packages, "
                  f"{len(unpinned)} not pinned by {env.file}")
            problems += [f"{env.file}: {' '.join(requirements)} installs {p}, which the file does not pin"
                         for p in unpinned]
        problems += compare_built(env, pins)
    for problem in problems:
        print(f"[pins] {problem}", file=sys.stderr)
    if problems:
        print("[pins] FAILED: a package missing from a file is added by `scripts/pins.py refresh --keep NAME` "
              "(README, 'Pinned environments')", file=sys.stderr)
        return 1
    print(f"[pins] every environment is pinned: {', '.join(e.name for e in envs)}")
    return 0


def compare_built(env: Environment, pins: dict[str, str]) -> list[str]:
    """A venv built here from this file must hold exactly the pinned versions. A matrix venv counts once
    scripts/matrix.sh has finished it (``.installed``): one still being installed, as scripts/test.sh
    does in the background, is checked by matrix.sh itself when its install ends."""
    matrix = REPO / ".matrix" / f"airflow-{env.airflow}"
    venvs = ([REPO / ".venv"] if env.file == MAIN else []) + [matrix] * (matrix / ".installed").exists()
    problems = []
    for venv in venvs:
        python = venv / "bin" / "python"
        if not python.exists():
            continue
        frozen = pip(python, "freeze", "--all", "--exclude-editable", "--disable-pip-version-check", capture=True)
        extra = []
        for line in frozen.splitlines():
            if "==" not in line:
                continue
            name, version = line.split("==", 1)
            if pins.get(canonical(name)) != version:
                extra.append(line)
        print(f"[pins] {venv.relative_to(REPO)}: {len(frozen.splitlines())} installed, {len(extra)} differ from {env.file}")
        problems += [f"{venv.relative_to(REPO)} holds {line}, which {env.file} does not pin; rebuild the venv "
                     "(scripts/setup.sh and scripts/matrix.sh reinstall when the file changes)" for line in extra]
    return problems


def refresh(envs: list[Environment], keep: bool) -> int:
    for env in envs:
        with tempfile.TemporaryDirectory(prefix=f"pins-{env.name}-") as folder:
            venv = Path(folder) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            python = venv / "bin" / "python"
            hints = Path(folder) / "hints.txt"
            lines = list(env.hints)
            if env.from_main is not None:
                main_pins = read_pins(REPO / MAIN)  # refreshed just before, when both are asked for
                wanted = {canonical(n) for n in env.from_main}
                lines += [f"{n}=={v}" for n, v in sorted(main_pins.items()) if DIRECT.match(n) or n in wanted]
            if keep and (REPO / env.file).exists():  # add what is missing, change nothing pinned
                lines += [f"{n}=={v}" for n, v in sorted(read_pins(REPO / env.file).items())]
            hints.write_text("\n".join(lines) + "\n")
            print(f"[pins] {env.name}: resolving Airflow {env.airflow} with {len(lines)} hints")
            pip(python, "install", "--quiet", "--upgrade", "-c", str(hints), *BUILD_TOOLS)
            pip(python, "install", "--quiet", "--no-build-isolation", "-c", str(hints),
                f"apache-airflow=={env.airflow}", *env.install)
            frozen = pip(python, "freeze", "--all", "--exclude-editable", capture=True)
        pins = sorted((line for line in frozen.splitlines() if "==" in line and not line.startswith("clara-airflow==")),
                      key=str.lower)
        header = [f"# Pins of the '{env.name}' environment: Airflow {env.airflow}, {' '.join(env.install)}.",
                  f"# Used by: {env.used_by}.",
                  "# Written by `python scripts/pins.py refresh " + env.name + "`; checked by `scripts/pins.py check`.",
                  *(f"# resolved with: {hint}" for hint in env.hints)]
        target = REPO / env.file
        target.parent.mkdir(exist_ok=True)
        target.write_text("\n".join(header + pins) + "\n")
        print(f"[pins] wrote {env.file}: {len(pins)} pins")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "refresh", "file"], help="file: print the pin file of each name")
    parser.add_argument("--installed", action="store_true",
                        help="check: only compare the venvs built here with their files (no resolution, no network)")
    parser.add_argument("--keep", action="store_true",
                        help="refresh: keep every version the file pins, only add what is missing")
    parser.add_argument("names", nargs="*", help=f"environments (default: all): {', '.join(e.name for e in ENVIRONMENTS)}, or an Airflow version")
    args = parser.parse_intermixed_args(argv)
    known = {**{e.airflow: e for e in ENVIRONMENTS}, **{e.name: e for e in ENVIRONMENTS}}  # a version names its env
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown environment {', '.join(unknown)}; known: {', '.join(known)}")
    envs = [known[n] for n in args.names] if args.names else ENVIRONMENTS
    if args.command == "file":
        print("\n".join(e.file for e in envs))
        return 0
    return check(envs, args.installed) if args.command == "check" else refresh(envs, args.keep)


if __name__ == "__main__":
    sys.exit(main())
