"""Typed field readers that record positioned problems instead of raising (rules V9-V15, V29-V31)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable

from clara_airflow.errors import Problem
from clara_airflow.spec.source import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    implicit_tag,
    position,
)

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLACEHOLDER_RE = re.compile(r"\$\{\{[ \t]*([A-Za-z0-9_-]+)[ \t]*\}\}")
_KIND = {MappingNode: "a mapping", SequenceNode: "a list", ScalarNode: "a single value"}

Fields = dict[str, tuple[Node, Node]]


def is_null(node: Node) -> bool:
    """A plain scalar that YAML reads as null counts as a missing value."""
    return isinstance(node, ScalarNode) and node.tag == NULL


def kind_of(node: Node) -> str:
    return _KIND.get(type(node), "a value")


def hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def valid_image(image: str) -> bool:
    """An image name without tag or digest (registry prefixes allowed): V18."""
    return bool(image) and not re.search(r"[\s@]", image) and ":" not in image.rsplit("/", 1)[-1]


def valid_tag(tag: str) -> bool:
    return bool(TAG_RE.fullmatch(tag))


class Checker:
    """Collects every problem of one file; readers return ``None`` for a value they rejected."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.scope: Collection[str] = ()  # lower-cased parameter names visible to placeholders

    def error(self, node: Node | tuple[int, int], rule: str, message: str) -> None:
        line, col = position(node) if isinstance(node, Node) else node
        self.problems.append(Problem(self.path, line, col, message, rule))

    def warn(self, node: Node | tuple[int, int], message: str) -> None:
        line, col = position(node) if isinstance(node, Node) else node
        self.warnings.append(Problem(self.path, line, col, f"warning: {message}"))

    # -- containers -------------------------------------------------------------------------------
    def mapping(self, node: Node, what: str, allowed: Collection[str],
                required: Iterable[str] = ()) -> Fields | None:
        """Check a fixed-key mapping: V11 kind, V9 unknown keys (``x-`` keys ignored), V10 required."""
        if not isinstance(node, MappingNode):
            self.error(node, "V11", f"{what} must be a mapping, not {kind_of(node)}")
            return None
        fields: Fields = {}
        for key, value in node.value:
            name = key.value
            if name in allowed:
                fields[name] = (key, value)
            elif not name.startswith("x-"):
                self.error(key, "V9", f"unknown key '{name}' in {what}{hint(name, allowed)}; "
                           f"allowed keys: {', '.join(sorted(allowed))}")
        for name in required:
            if name not in fields or is_null(fields[name][1]):
                self.error(node, "V10", f"missing required key '{name}' in {what}")
        return fields

    def sequence(self, node: Node, what: str) -> list[Node]:
        if is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, "V11", f"{what} must be a list, not {kind_of(node)}")
            return []
        return list(node.value)

    def pairs(self, node: Node, what: str) -> list[tuple[Node, Node]]:
        """A user-keyed map (``variables``, ``parameters``): keys are names, no ``x-`` exemption."""
        if is_null(node):
            return []
        if not isinstance(node, MappingNode):
            self.error(node, "V11", f"{what} must be a mapping of names to values, not {kind_of(node)}")
            return []
        return list(node.value)

    # -- scalars ------------------------------------------------------------------------------------
    def string(self, node: Node, what: str, *, placeholders: bool = False, quote_hint: bool = False,
               free_text: bool = False) -> str | None:
        """A string field: the scalar's text as written; ``None`` when null or rejected."""
        if is_null(node):
            return None
        if not isinstance(node, ScalarNode):
            self.error(node, "V11", f"{what} must be a string, not {kind_of(node)}")
            return None
        text: str = node.value
        if quote_hint and not node.style and node.tag in (INT, FLOAT, BOOL):
            self.warn(node, f"{what} '{text}' is read as the text '{text}'; quote it to make that "
                      f"explicit ({what.split()[-1]}: \"{text}\")")
        if not free_text and "${{" in text:
            self._check_placeholders(node, text, what, placeholders)
        return text

    def _check_placeholders(self, node: Node, text: str, what: str, allowed: bool) -> None:
        found = []
        start = text.find("${{")
        while start != -1:
            match = PLACEHOLDER_RE.match(text, start)
            if match is None:
                self.error(node, "V29", f"malformed placeholder in {what} at '{text[start:start + 20]}'; "
                           "write a template parameter as ${{ NAME }}")
                return
            found.append(match.group(1))
            start = text.find("${{", match.end())
        if not allowed:
            self.error(node, "V30", f"placeholder '${{{{ {found[0]} }}}}' is not allowed in {what}; "
                       "placeholders may appear only in image, tag, command items and variables values")
            return
        for name in dict.fromkeys(found):  # a name used twice in one string is reported once
            if name.lower() not in self.scope:
                self.error(node, "V31", f"undeclared parameter '{name}' in {what}; declare it under the "
                           "pipeline's or this operator's `parameters`")

    def integer(self, node: Node, what: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == INT:
            text: str = node.value
            if text.isdigit() and text[0] != "0":
                return int(text)
            if implicit_tag(text) == INT:  # an explicit !!int must still hold an integer
                return _yaml_int(text)
        self.error(node, "V11", f"{what} must be an integer, not '{_shown(node)}'")
        return None

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == BOOL and implicit_tag(node.value) == BOOL:
            return node.value.lower() in ("yes", "true", "on", "y")
        self.error(node, "V11", f"{what} must be a boolean (true or false), not '{_shown(node)}'")
        return None

    def name(self, node: Node, what: str, *, max_len: int = 255) -> str | None:
        """V14: 1 to ``max_len`` characters from A-Z a-z 0-9 - _."""
        text = self.string(node, what)
        if text is None:
            if is_null(node):
                self.error(node, "V10", f"missing required key: {what} has no value")
            return None
        if not text or len(text) > max_len or not NAME_RE.fullmatch(text):
            self.error(node, "V14", f"invalid name '{text}' for {what}: use 1 to {max_len} characters "
                       "from A-Z, a-z, 0-9, '-' and '_'")
            return None
        return text

    def env_name(self, node: Node, text: str, what: str) -> bool:
        """V15: environment-variable names match [A-Za-z_][A-Za-z0-9_]*."""
        if ENV_RE.fullmatch(text):
            return True
        self.error(node, "V15", f"{what} '{text}' is not a valid environment variable name: use letters, "
                   "digits and '_', not starting with a digit (no '-')")
        return False


def _yaml_int(text: str) -> int:
    """Integers as YAML 1.1 reads them (``0o17``, ``017``, ``0x1F``, ``1_000``, ``0b101``)."""
    from yaml.constructor import SafeConstructor

    value: int = SafeConstructor.construct_yaml_int(SafeConstructor(), ScalarNode(INT, text))
    return value


def _shown(node: Node) -> str:
    return node.value if isinstance(node, ScalarNode) else kind_of(node)
