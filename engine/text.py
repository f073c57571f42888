"""Text from the operator, normalised where it comes in (Telegram, the console, the command line).

Removed everywhere: NUL (SQLite and C tools cut a string there) and the invisible characters that change how
text displays without showing themselves: zero-width spaces and joiners, the left-to-right and right-to-left
marks (U+200B-U+200F), the bidi embeddings and overrides (U+202A-U+202E), the bidi isolates (U+2066-U+2069) and
the byte-order mark (U+FEFF). A project called "\u202egnp.exe" would otherwise display as "exe.png".

Names (projects, schedules) are one line: every run of whitespace, newlines included, becomes one space.
Text that is cut to a limit says so: ``clip`` returns the note to show the operator.
"""

from __future__ import annotations

import re

__all__ = ["MAX_INPUT_CHARS", "MAX_MEMORY_CHARS", "clean_name", "clean_text", "clip", "memory_text"]

MAX_INPUT_CHARS = 20_000  # one message from the operator; Telegram itself stops at 4,096
MAX_MEMORY_CHARS = 2_000  # one memory, from /remember and `switchboard memory add` alike

_INVISIBLE = re.compile("[\x00\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """``text`` without NUL, zero-width and bidi-control characters; everything else kept as it is."""
    return _INVISIBLE.sub("", text)


def clean_name(text: str) -> str:
    """A name on one line: cleaned, whitespace runs (newlines too) made one space, trimmed."""
    return _SPACES.sub(" ", clean_text(text)).strip()


def clip(text: str, limit: int = MAX_INPUT_CHARS) -> tuple[str, str | None]:
    """``text`` cleaned and cut to ``limit`` characters, and the note to show the operator when it was cut."""
    cleaned = clean_text(text)
    if len(cleaned) <= limit:
        return cleaned, None
    note = f"Your message was {len(cleaned):,} characters; I read only the first {limit:,}."
    return cleaned[:limit], note


def memory_text(text: str) -> str:
    """A memory's text, cleaned; a ValueError stating the limit when it is empty or too long."""
    cleaned = clean_text(text).strip()
    if not cleaned:
        raise ValueError("the memory's text is empty")
    if len(cleaned) > MAX_MEMORY_CHARS:
        raise ValueError(
            f"that is {len(cleaned):,} characters; a memory holds at most {MAX_MEMORY_CHARS:,}. Shorten it."
        )
    return cleaned
