"""``x-airflow.parameters``: what a run may give each parameter (``pattern``, ``enum``, ``max_length``).

Read here into plain data; the cross-checks (declared names, defaults obeying them, pinned image
parameters) are in :mod:`clara_airflow.spec.crosscheck`.
"""

from __future__ import annotations

import re
from typing import Any

from clara_airflow.spec.checker import Checker
from clara_airflow.spec.source import Node, position

RULE_KEYS = ("pattern", "enum", "max_length")


def parameter_rules(c: Checker, node: Node, key: str) -> Any:
    """``x-airflow.parameters``: per parameter name, the values a run may give it (trigger-form schema).

    Returns lower-cased name -> ``{"name", "pattern", "enum", "max_length", "at"}`` (``at``: line, col).
    """
    rules: dict[str, dict[str, Any]] = {}
    for name_node, body in c.pairs(node, "x-airflow key 'parameters'"):
        name = c.name(name_node, "parameter name in x-airflow.parameters")
        fields = c.mapping(body, f"x-airflow.parameters.{name_node.value}", RULE_KEYS)
        if name is None or fields is None:
            continue
        rule: dict[str, Any] = {"name": name, "at": list(position(name_node))}
        if "pattern" in fields:
            rule["pattern"] = _rule_pattern(c, fields["pattern"][1], name)
        if "enum" in fields:
            items = c.sequence(fields["enum"][1], f"x-airflow.parameters.{name}.enum")
            values = [c.string(item, f"x-airflow.parameters.{name}.enum item") for item in items]
            if not values:
                c.error(fields["enum"][1], "V33", f"x-airflow.parameters.{name}.enum must list at least one value")
            rule["enum"] = [v for v in values if v is not None]
        if "max_length" in fields:
            rule["max_length"] = c.integer(fields["max_length"][1], f"x-airflow.parameters.{name}.max_length")
        rules[name.lower()] = {k: v for k, v in rule.items() if v is not None}
    return rules


def _rule_pattern(c: Checker, node: Node, name: str) -> str | None:
    text = c.string(node, f"x-airflow.parameters.{name}.pattern")
    if text is None:
        return None
    try:
        re.compile(text)
    except re.error as exc:
        c.error(node, "V33", f"x-airflow.parameters.{name}.pattern is not a valid regular expression ({exc})")
        return None
    return text


