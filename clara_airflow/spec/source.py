"""Safe YAML reading that keeps every node's position and original scalar text.

Implements the loading rules V1-V7 of clara-pdl.md: size, syntax, one document, alias budget, tags,
key types and repeated keys. Loading errors stop at the first one found, in document order.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import yaml

from clara_airflow.errors import Problem, SpecError

MAX_BYTES = 1_048_576
ALIAS_BUDGET = 10_000

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
SEQ, MAP = _T + "seq", _T + "map"
Node = yaml.Node
ScalarNode = yaml.ScalarNode
MappingNode = yaml.MappingNode
SequenceNode = yaml.SequenceNode

_STANDARD_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, SEQ, MAP})
_NON_STRING_KEY = {
    NULL: "null", BOOL: "a boolean", INT: "an integer", FLOAT: "a number",
    _T + "timestamp": "a date", _T + "merge": "a merge key",
}

_WILDCARD = tuple(yaml.resolver.Resolver.yaml_implicit_resolvers.get(None, ()))
_BY_FIRST = {first: (*resolvers, *_WILDCARD)
             for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items() if first is not None}


def implicit_tag(text: str) -> str:
    """The tag a plain scalar ``text`` gets in YAML 1.1, by PyYAML's resolvers for its first character
    (what the loader gives untagged scalars, and what ``!!int``/``!!bool`` values must match)."""
    for tag, regexp in _BY_FIRST.get(text[:1], _WILDCARD):
        if regexp.match(text):
            return str(tag)
    return STR


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader with the implicit-tag lookup of PyYAML's Resolver, minus its generality.

    The composer calls ``resolve`` once per node; the safe loader has no path resolvers, so the
    path bookkeeping is skipped. Same tags as ``SafeLoader`` (tests compare both on every example).
    """

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return implicit_tag(value) if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


def position(node: Node) -> tuple[int, int]:
    """The 1-based (line, column) where ``node`` starts."""
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def _fail(path: str, line: int, col: int, rule: str, message: str) -> SpecError:
    return SpecError([Problem(path, line, col, message, rule)])


PIPELINE_SUFFIXES = (".yaml", ".yml")
DEFAULTS_FILE = "clara-defaults.yaml"


def pipeline_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every name ending in ``.yaml``/``.yml`` below ``folder``, except ``clara-defaults.yaml`` and
    anything in or named like a hidden folder (``.git``), sorted. Symlinked folders are not entered.

    Not only regular files are listed: a folder, FIFO, dangling symlink or symlink loop with such a
    name is listed too, so that reading it reports the problem instead of the file vanishing.
    """
    root = Path(folder)
    found = []
    for here, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(here)
        found += [base / n for n in names if n.endswith(PIPELINE_SUFFIXES) and not n.startswith(".")
                  and n != DEFAULTS_FILE]
        found += [base / d for d in dirs if d.endswith(PIPELINE_SUFFIXES)]
    return sorted(found)


def read_pipeline_bytes(path: str | os.PathLike[str]) -> bytes:
    """A pipeline file's bytes, read safely: regular files only, the size checked before reading, and
    never more than the limit plus one byte read.

    :raises SpecError: for a missing file, a dangling symlink or loop, a folder, FIFO or device (V1 for size).
    """
    name = str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        kind = "a symlink loop" if exc.errno == errno.ELOOP else \
            "a dangling symlink" if os.path.islink(path) else f"unreadable ({exc.strerror})"
        raise _fail(name, 1, 1, "V1", f"cannot read the pipeline file: it is {kind}; fix or remove it") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a device or socket"
        raise _fail(name, 1, 1, "V1", f"not a regular file but {kind}; a pipeline must be a YAML file "
                    "(rename it so it does not end in .yaml/.yml, or remove it)")
    if info.st_size > MAX_BYTES:
        raise _too_large(name, info.st_size)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(name, 1, 1, "V1", f"cannot read the pipeline file: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise _too_large(name, len(data))
    return data


def _too_large(path: str, size: int) -> SpecError:
    return _fail(path, 1, 1, "V1", f"file is too large: {size:,} bytes, the limit is "
                 f"{MAX_BYTES:,} bytes; split the pipeline or remove embedded data")


def read_document(path: str, data: bytes) -> Node:
    """Read one pipeline file's bytes into a position-carrying YAML node tree.

    :param path: the file name used in error messages.
    :param data: the file's bytes.
    :raises SpecError: with the first loading error (rules V1-V7).
    """
    if len(data) > MAX_BYTES:
        raise _too_large(path, len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, 1, 1, "V2", f"invalid YAML: the file is not UTF-8 (bad byte at offset "
                    f"{exc.start}); save it as UTF-8") from None
    try:
        if "*" in text:
            _check_aliases(path, text)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.composer.ComposerError as exc:
        raise _composer_problem(path, exc) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise _fail(path, line, col, "V2", f"invalid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        raise _fail(path, 1, 1, "V2", f"invalid YAML: {exc}") from None
    if node is None:
        raise _fail(path, 1, 1, "V3", "the file is empty; it must hold exactly one YAML document")
    _check_nodes(path, node)
    return node


def _composer_problem(path: str, exc: yaml.composer.ComposerError) -> SpecError:
    mark = exc.problem_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    if "single document" in str(exc.context) + str(exc.problem):
        return _fail(path, line, col, "V3", "a second document starts here; a pipeline file must "
                     "hold exactly one YAML document (remove the '---' and what follows)")
    return _fail(path, line, col, "V4", f"invalid alias: {exc.problem}")


def _check_aliases(path: str, text: str) -> None:
    """V4: bound alias expansion and refuse aliases to anchors whose node is still open."""
    sizes: dict[str, int] = {}
    stack: list[tuple[str | None, list[int]]] = [(None, [0])]
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append((event.anchor, [1]))
            continue
        if isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, (size,) = stack.pop()
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, _alias_size(path, event, sizes, stack)
            total += size
            if total > ALIAS_BUDGET:
                raise _alias_error(path, event, f"expands the document beyond {ALIAS_BUDGET:,} added nodes; "
                                   "write the repeated parts out or shorten them")
        else:
            if isinstance(event, yaml.DocumentEndEvent):
                sizes.clear()
            continue
        if anchor:
            sizes[anchor] = size
        stack[-1][1][0] += size


def _alias_size(path: str, event: yaml.AliasEvent, sizes: dict[str, int],
                stack: list[tuple[str | None, list[int]]]) -> int:
    if event.anchor in sizes:
        return sizes[event.anchor]
    if any(anchor == event.anchor for anchor, _ in stack):
        raise _alias_error(path, event, "refers to an anchor whose node is not complete yet (a recursive alias)")
    raise _alias_error(path, event, "refers to no anchor")


def _alias_error(path: str, event: yaml.AliasEvent, why: str) -> SpecError:
    mark = event.start_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return _fail(path, line, col, "V4", f"alias '*{event.anchor}' {why}; repeat the value "
                 "instead")


def _check_nodes(path: str, root: Node) -> None:
    """V5-V7 in document order: standard tags only, string keys, no repeated key.

    This walk visits every node of every file the loader reads, so the common case (a standard tag,
    a plain string key) stays inline.
    """
    seen: set[int] = set()
    todo = [root]
    standard = _STANDARD_TAGS
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in standard:
            _check_tag(path, node)
        if type(node) is MappingNode:
            keys: set[str] = set()
            for key, _ in node.value:
                if type(key) is not ScalarNode or key.tag != STR or key.value in keys:
                    _check_key(path, key, keys)
                keys.add(key.value)
            todo.extend([value for _, value in reversed(node.value)])
        elif type(node) is SequenceNode:
            todo.extend(reversed(node.value))


def _check_tag(path: str, node: Node) -> None:
    tag = node.tag
    if tag in _STANDARD_TAGS:
        return
    if isinstance(node, ScalarNode) and not node.style and implicit_tag(node.value) == tag:
        return  # an implicit type such as a date: read as text by string fields
    line, col = position(node)
    shown = tag.replace(_T, "!!")
    raise _fail(path, line, col, "V5", f"tag '{shown}' is not allowed; only !!str, !!int, !!float, "
                "!!bool, !!null, !!seq and !!map may be used (remove the tag)")




def _check_key(path: str, key: Node, keys: set[str]) -> None:
    line, col = position(key)
    if not isinstance(key, ScalarNode):
        raise _fail(path, line, col, "V6", "key must be a string, not a list or mapping")
    if key.tag != STR:
        kind = _NON_STRING_KEY.get(key.tag)
        if kind is not None:
            raise _fail(path, line, col, "V6", f"key must be a string: YAML reads '{key.value}' as "
                        f"{kind}; quote it (\"{key.value}\") or rename it")
    if key.value in keys:
        raise _fail(path, line, col, "V7", f"duplicate key '{key.value}' in this mapping; "
                    "remove one of them")
    keys.add(key.value)
