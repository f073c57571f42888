"""Fenced code blocks and JSON inside text written by a model: the scanning both parsers share (the persona's
action in ``engine.persona``, the reviewer's verdict in ``engine.verdict``).

The text may be garbage, huge or hostile: the scan is one linear pass, and error text is capped.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from pydantic import ValidationError

__all__ = ["MAX_BLOCK_CHARS", "Fence", "cap", "describe_invalid", "fences"]

# An action is a few hundred bytes; anything far larger is a runaway model or an attack, not a request.
MAX_BLOCK_CHARS = 64_000
# Error text goes to the operator's phone and to the event log; keep it readable.
_MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Fence:
    start: int  # first line index of the block (the opening fence)
    end: int  # line index after the block (after the closing fence, or len(lines) when unterminated)
    lang: str
    body: str


_FENCE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)")
_CLOSE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*$")


def _closes(line: str, marker: str) -> bool:
    # CommonMark: the same fence character, at least as many of them, and nothing else on the line.
    match = _CLOSE_RE.match(line)
    return match is not None and match.group(1)[0] == marker[0] and len(match.group(1)) >= len(marker)


def fences(lines: list[str]) -> Iterator[Fence]:
    """Fenced code blocks, found in one linear pass (a regex over the whole text is quadratic on hostile
    input with many unclosed fences). An unterminated block runs to the end: a model cut off mid-action."""
    i = 0
    while i < len(lines):
        opening = _FENCE_RE.match(lines[i])
        if not opening:
            i += 1
            continue
        marker, lang = opening.group(1), opening.group(2).lower()
        j = i + 1
        while j < len(lines) and not _closes(lines[j], marker):
            j += 1
        body = "".join(lines[i + 1 : j])
        end = min(j + 1, len(lines))
        yield Fence(i, end, lang, body)
        i = end


def describe_invalid(exc: ValidationError, what: str = "action", tags: Collection[str] = ("enqueue", "none")) -> str:
    """A validation error as one short line for the operator: each bad field and what is wrong with it."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        # The first part of a union error's location is the tag ("enqueue"); the operator needs the field.
        loc = error["loc"][1:] if error["loc"] and error["loc"][0] in tags else error["loc"]
        where = ".".join(str(p) for p in loc) or what
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return cap(f"invalid {what}: " + "; ".join(parts))


def cap(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
