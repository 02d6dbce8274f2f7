"""``${{ name }}`` template parameters (section 9) and ``$(NAME)`` runtime references (section 4)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from clara_airflow.spec.checker import PLACEHOLDER_RE

_REFERENCE_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``${{ name }}``; ``values`` is keyed by lower-cased parameter name."""
    if "${{" not in text:
        return text
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1).lower()], text)


def identity(image: str, tag: str, command: tuple[str, ...] | list[str], values: Mapping[str, str]
             ) -> tuple[str, str, tuple[str, ...]]:
    """A service identity (section 7.4) with ``values`` substituted: what the id is computed over."""
    return substitute(image, values), substitute(tag, values), tuple(substitute(c, values) for c in command)


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' rules for ``$(NAME)``: set names are replaced, unset ones kept, ``$$`` gives ``$``."""
    if "$" not in text:
        return text

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE_RE.sub(repl, text)
