"""Which pipelines a complete group starts: its AE title's ``pipelines`` (every group), then its ``rules``
matched on the DICOM tags of the group's instances, else its ``default``. No pynetdicom, no Airflow.

A rule matches a group when at least one instance matches every condition of its ``when``: the
element's value (each value of a multi-valued element; a missing element reads as the empty string)
matches the regular expression in full, ignoring case. Only the headers are read (never pixel data),
and reading stops as soon as the answer cannot change.

At reception, :func:`header_uid` reads the UID an instance is grouped by, from its first bytes.
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import Route

__all__ = ["Decision", "decide", "header_uid", "header_values", "instance_values", "keywords_of", "valid_uid"]
Values = tuple[tuple[str, tuple[str, ...]], ...]  # keyword -> its values, hashable: one instance's routing facts

HEAD = 65536  # bytes read at once for a received instance's group UID
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def valid_uid(value: object) -> str | None:
    """A DICOM UID (digits in dot-separated components, at most 64 characters): safe as a folder name."""
    text = str(value or "").strip()
    return text if len(text) <= 64 and _UID.fullmatch(text) else None


def header_uid(handle: int, path: Path, keyword: str) -> str | None:
    """The ``keyword`` UID of a received instance (its header only is read, never its pixels): from its
    first :data:`HEAD` bytes, read at once, where nearly every header is; else from the file."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    head = os.pread(handle, HEAD, 0)
    for source in (io.BytesIO(head), path) if len(head) == HEAD else (io.BytesIO(head),):
        try:
            value = valid_uid(dcmread(source, stop_before_pixels=True, specific_tags=[keyword]).get(keyword))
        except (InvalidDicomError, ValueError, EOFError, KeyError, OSError, struct.error):
            continue
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Decision:
    """What a group starts: (pipeline, priority) pairs, in order; ``rules``: the indices of the rules that
    matched (for the log); ``read``: how many instances were read."""

    runs: tuple[tuple[str, str], ...]
    rules: tuple[int, ...] = ()
    read: int = 0


def keywords_of(route: Route) -> tuple[str, ...]:
    return tuple(sorted({k for rule in route.rules for k in rule.when}))


def _values(dataset: Any, keywords: Sequence[str]) -> Values:
    found: list[tuple[str, tuple[str, ...]]] = []
    for keyword in keywords:
        value = dataset.get(keyword)
        if value is None or value == "":
            found.append((keyword, ("",)))
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            found.append((keyword, tuple(str(v) for v in value) or ("",)))
        else:
            found.append((keyword, (str(value),)))
    return tuple(found)


def header_values(path: Path, uid: str, keywords: Sequence[str]) -> tuple[str | None, Values | None]:
    """At reception: the ``uid`` element and the routing values of one instance, from its whole header
    (read from the file up to the pixel data, so no element is cut off); (None, None) if unreadable."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        dataset = dcmread(path, stop_before_pixels=True, specific_tags=[uid, *keywords])
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, struct.error):
        return None, None
    value = dataset.get(uid)
    return (None if value is None else str(value)), _values(dataset, keywords)


def instance_values(folder: Path, keywords: Sequence[str]) -> Iterator[Values]:
    """Per instance of ``folder`` (sorted by name), its routing values. A file pydicom cannot read is
    skipped (the receiver stored only what it could parse)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    for path in sorted(folder.glob("*.dcm")):
        try:
            dataset = dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, struct.error):
            continue
        yield _values(dataset, keywords)


def _matches(when: dict[str, re.Pattern[str]], values: dict[str, tuple[str, ...]]) -> bool:
    return all(any(pattern.fullmatch(v) for v in values[keyword]) for keyword, pattern in when.items())


def decide(route: Route, folder: Path, seen: Iterable[Values] | None = None) -> Decision:
    """The runs a complete group in ``folder`` starts under ``route``; ``seen``: its instances' routing
    values as read at reception (then no file is read), None: read them from the files."""
    runs = [(name, route.priority) for name in route.pipelines]
    if not route.rules:
        return Decision(tuple(runs))
    compiled = [{k: re.compile(p, re.IGNORECASE) for k, p in rule.when.items()} for rule in route.rules]
    keywords = keywords_of(route)
    pending, matched, read = set(range(len(route.rules))), set(), 0
    for found in instance_values(folder, keywords) if seen is None else seen:
        values = dict(found)
        read += 1
        for index in sorted(pending):
            if _matches(compiled[index], values):
                matched.add(index)
                pending.discard(index)
        if not pending or (route.first_match and matched and min(matched) < min(pending)):
            break  # no later instance can change the answer
    chosen = sorted(matched)[:1] if route.first_match else sorted(matched)
    for index in chosen:
        rule = route.rules[index]
        runs += [(name, rule.priority or route.priority) for name in rule.pipelines]
    if not chosen:
        runs += [(name, route.priority) for name in route.default]
    unique = dict[str, str]()
    for name, priority in runs:  # one run per pipeline and group: the first rule that names it decides
        unique.setdefault(name, priority)
    return Decision(tuple(unique.items()), tuple(chosen), read)
