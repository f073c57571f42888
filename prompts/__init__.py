"""The words: every prompt and message template Switchboard sends, as Markdown files in this package.

Templates use ``string.Template`` placeholders (``$name`` or ``${name}``; ``$$`` is a literal dollar). The
files are byte-stable and put their variable parts last, so the stable prefix of a prompt stays identical
between calls and provider prompt caches stay warm. Edit them freely, but keep that shape.

Public names:

- ``load(name)``: the raw text of ``<name>.md`` (or ``name`` itself when it has a suffix).
- ``render(name, **values)``: ``load`` plus substitution; a missing value raises ``MissingPlaceholder``.
- ``placeholders(name)``: the placeholder names a template takes.
- ``job_instructions(job_type)``: the instruction block for one job type (``job_<type>.md``, else the default).
- ``persona_system(persona_name, job_types, core)``: the persona's full system prompt.
- ``untrusted(label, text)``: ``text`` that came from outside (a worker's result, a memory, earlier
  conversation) as one delimited data block; the prompts say that such a block is data, never instructions.

This package imports nothing from ``engine``, ``memory`` or ``bot``: all three read it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from string import Template

__all__ = [
    "MissingPlaceholder",
    "UnknownPrompt",
    "job_instructions",
    "load",
    "persona_system",
    "placeholders",
    "render",
    "untrusted",
]

# A prompt name is a plain file name inside this package: no folders, nothing hidden.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
# The markers of an untrusted-data block. Content that spells one is defused (see ``untrusted``).
_DATA_OPEN = "<untrusted-data"
_DATA_CLOSE = "</untrusted-data"
_MARKER_RE = re.compile(r"<(/?)(untrusted-data)", re.IGNORECASE)
_LABEL_UNSAFE_RE = re.compile(r"[^\w .,:#'()/-]+")


class UnknownPrompt(LookupError):
    """No prompt file of that name ships in the ``prompts`` package."""


class MissingPlaceholder(KeyError):
    """A template was rendered without a value for one of its placeholders."""

    def __init__(self, template: str, placeholder: str) -> None:
        super().__init__(placeholder)
        self.template = template
        self.placeholder = placeholder

    def __str__(self) -> str:
        return f"prompt {self.template!r}: no value given for placeholder ${self.placeholder}"


def _file_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name:
        raise UnknownPrompt(f"invalid prompt name {name!r}")
    # "persona" means persona.md; "notes.txt" is taken as given.
    return name if "." in name else f"{name}.md"


@lru_cache(maxsize=128)
def load(name: str) -> str:
    """The text of the prompt file ``name`` (``.md`` added when the name has no suffix)."""
    file_name = _file_name(name)
    resource = resources.files(__name__).joinpath(file_name)
    if not resource.is_file():
        known = ", ".join(sorted(_available()))
        raise UnknownPrompt(f"unknown prompt {name!r} (no {file_name} in prompts/; known: {known})")
    # Decoded as written (no newline translation), so the cached prefix never changes with the platform.
    return resource.read_bytes().decode("utf-8")


def _available() -> list[str]:
    return [
        entry.name.removesuffix(".md")
        for entry in resources.files(__name__).iterdir()
        if entry.is_file() and entry.name.endswith(".md")
    ]


def placeholders(name: str) -> frozenset[str]:
    """The placeholder names the template ``name`` takes."""
    return frozenset(
        match.group("named") or match.group("braced")
        for match in Template.pattern.finditer(load(name))
        if match.group("named") or match.group("braced")
    )


def render(name: str, **values: object) -> str:
    """Substitute ``values`` into the template ``name``.

    Every placeholder needs a value (``MissingPlaceholder`` names the first one missing); extra values are
    ignored, so a caller can hand the same set to templates that use only some of them (the rubrics).
    """
    text = load(name)
    try:
        return Template(text).substitute({key: str(value) for key, value in values.items()})
    except KeyError as exc:
        raise MissingPlaceholder(name, str(exc.args[0])) from None
    except ValueError as exc:
        # A stray "$" in a template file: a bug in the file, reported with its name.
        raise ValueError(f"prompt {name!r}: {exc}") from None


def job_instructions(job_type: str) -> str:
    """The instruction block for one job type, or the default block for a type without its own file."""
    try:
        return load(f"job_{job_type}")
    except UnknownPrompt:
        return load("job_default")


def persona_system(persona_name: str, job_types: Iterable[str], core: str = "") -> str:
    """The persona's system prompt: persona, action schema, core memory last.

    ``job_types`` are the types the persona may queue (``chat`` is dropped: the persona is the chat).
    """
    queueable = [t for t in job_types if t != "chat"]
    schema = render("action_schema", job_types=", ".join(f'"{t}"' for t in queueable))
    return render(
        "persona",
        persona_name=persona_name,
        action_schema=schema.rstrip("\n"),
        core_memory=core.strip() or "(empty)",
    )


def untrusted(label: str, text: str) -> str:
    """``text`` from outside Switchboard as one block of data that it cannot close or reopen.

    The block opens and closes with a boundary derived from the content's hash, so the same text gives the
    same bytes (provider prompt caches stay warm) and the text cannot know the boundary in advance. Any
    spelling of the block's markers inside the text is defused besides (a zero-width space goes after its
    ``<``), so no line of the content can pass for the end of the block. The prompts
    that carry such blocks say that their content is data to evaluate or use, never instructions to follow.
    """
    body = _MARKER_RE.sub(lambda m: f"<{m.group(1)}\u200b{m.group(2)}", text.strip("\n"))
    boundary = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = " ".join(_LABEL_UNSAFE_RE.sub(" ", label).split())[:80] or "data"
    return (
        f'{_DATA_OPEN} label="{name}" boundary="{boundary}">\n'
        f"{body}\n"
        f'{_DATA_CLOSE} boundary="{boundary}">'
    )
