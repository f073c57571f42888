"""Structured output from models: the persona's action and the reviewer's verdict.

Both arrive as JSON inside free text written by a model, so both parsers assume the text may be garbage,
huge or hostile. ``parse_persona_reply`` never raises: the operator must always get the persona's prose, and
a broken action is reported, not fatal. ``parse_review`` raises ``UnparseableReview``, because a verdict that
cannot be read must not pass the quality gate; the engine treats it as the reviewer's failure, not the maker's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.settings import JOB_TYPES

__all__ = [
    "Criterion",
    "EnqueueAction",
    "NoAction",
    "PersonaAction",
    "ReviewVerdict",
    "UnparseableReview",
    "parse_persona_reply",
    "parse_review",
]

# An action is a few hundred bytes; anything far larger is a runaway model or an attack, not a request.
MAX_ACTION_BLOCK_CHARS = 64_000
MAX_TITLE_CHARS = 200
MAX_PROMPT_CHARS = 50_000
# Error text goes to the operator's phone and to the event log; keep it readable.
_MAX_ERROR_CHARS = 400


class UnparseableReview(ValueError):
    """The reviewer's answer holds no valid verdict. The message says what was wrong."""


class EnqueueAction(BaseModel):
    """Queue a job on the operator's behalf."""

    # Models add chatter fields ("reason", "notes"); ignoring them costs nothing and keeps good actions.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    action: Literal["enqueue"]
    type: str
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    project: str | None = Field(None, max_length=200)
    priority: Literal["high", "normal", "low"] = "normal"

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value  # the str field reports the wrong type
        normalised = value.strip().lower()
        allowed = _allowed_types(info)
        if normalised not in allowed:
            raise ValueError(f"unknown job type {value[:40]!r} (one of: {', '.join(allowed)})")
        return normalised

    @field_validator("priority", mode="before")
    @classmethod
    def _lower_priority(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("project", mode="before")
    @classmethod
    def _blank_project_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value


class NoAction(BaseModel):
    """The persona considered queueing work and decided not to."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["none"]


PersonaAction = Annotated[EnqueueAction | NoAction, Field(discriminator="action")]
_PERSONA_ACTION: TypeAdapter[EnqueueAction | NoAction] = TypeAdapter(PersonaAction)


def _allowed_types(info: ValidationInfo) -> tuple[str, ...]:
    # The caller may pass the configured job types as validation context; "chat" is never queueable,
    # because a chat job is the persona itself and queueing one would loop.
    context = info.context if isinstance(info.context, dict) else {}
    types: Iterable[str] = context.get("job_types") or JOB_TYPES
    return tuple(t for t in types if t != "chat")


# --- The persona's reply ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fence:
    start: int  # first line index of the block (the opening fence)
    end: int  # line index after the block (after the closing fence, or len(lines) when unterminated)
    lang: str
    body: str


_FENCE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)")
_CLOSE_RE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*$")
# In a json block even a broken key ('action': or action:) shows an attempted action worth reporting;
# "transaction": does not.
_LOOSE_ACTION_KEY_RE = re.compile(r"""(?<![\w"'])["']?action["']?\s*:""")
_ACTION_KEY_RE = re.compile(r'"action"\s*:')


def _closes(line: str, marker: str) -> bool:
    # CommonMark: the same fence character, at least as many of them, and nothing else on the line.
    match = _CLOSE_RE.match(line)
    return bool(match) and match.group(1)[0] == marker[0] and len(match.group(1)) >= len(marker)


def _fences(lines: list[str]) -> Iterator[_Fence]:
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
        yield _Fence(i, end, lang, body)
        i = end


def _is_action_block(fence: _Fence) -> bool:
    # A json (or unlabelled) block mentioning "action" is meant for the engine; other code blocks in the
    # reply (a snippet of Python, a JSON example without "action") are content for the operator and stay.
    if fence.lang == "json":
        return bool(_LOOSE_ACTION_KEY_RE.search(fence.body))
    return fence.lang == "" and bool(_ACTION_KEY_RE.search(fence.body))


def _load_json(text: str) -> tuple[Any, str | None]:
    if len(text) > MAX_ACTION_BLOCK_CHARS:
        return None, f"action block too large ({len(text)} characters)"
    try:
        return json.loads(text), None
    except RecursionError:
        # json.loads recurses per nesting level; "[[[[...]]]]" from a hostile or looping model would
        # otherwise escape as RecursionError.
        return None, "action block is nested too deeply"
    except ValueError as exc:
        return None, f"action block is not valid JSON: {exc}"


def _describe(exc: ValidationError, what: str = "action") -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        # The first part of a union error's location is the tag ("enqueue"); the operator needs the field.
        loc = error["loc"][1:] if error["loc"] and error["loc"][0] in ("enqueue", "none") else error["loc"]
        where = ".".join(str(p) for p in loc) or what
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return _cap(f"invalid {what}: " + "; ".join(parts))


def _cap(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _validate_action(
    data: Any, job_types: Iterable[str] | None
) -> tuple[EnqueueAction | NoAction | None, str | None]:
    if not isinstance(data, dict):
        return None, f"action block must be a JSON object, not {type(data).__name__}"
    if isinstance(data.get("action"), str):
        data = {**data, "action": data["action"].strip().lower()}
    context = {"job_types": tuple(job_types)} if job_types is not None else None
    try:
        return _PERSONA_ACTION.validate_python(data, context=context), None
    except ValidationError as exc:
        return None, _describe(exc)
    except RecursionError:
        return None, "action block is nested too deeply"


def parse_persona_reply(
    text: str, *, job_types: Iterable[str] | None = None
) -> tuple[str, EnqueueAction | NoAction | None, str | None]:
    """Split the persona's reply into (prose for the operator, validated action or None, error or None).

    The action is the one fenced ``json`` block (or unlabelled block) that names an ``"action"``; a reply that
    is nothing but a JSON action object is accepted too. The action block is removed from the prose; all other
    text, including other code blocks, is kept. An error is returned, never raised, when an action block is
    present but unusable (invalid JSON, wrong shape, unknown job type, more than one block). ``job_types``
    overrides the queueable types (default ``engine.settings.JOB_TYPES``; ``chat`` is never queueable).
    """
    if not isinstance(text, str):
        return "", None, f"reply is not text ({type(text).__name__})"
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}") and '"action"' in stripped:
        # The whole reply is the action object: no prose to keep, whatever becomes of the action.
        data, error = _load_json(stripped)
        if error is not None:
            return stripped, None, _cap(error)
        action, error = _validate_action(data, job_types)
        return "", action, error
    lines = text.splitlines(keepends=True)
    blocks = [fence for fence in _fences(lines) if _is_action_block(fence)]
    if not blocks:
        return text.strip(), None, None
    prose = _tidy(_without(lines, blocks))
    if len(blocks) > 1:
        return prose, None, f"the reply carried {len(blocks)} action blocks; only one is allowed"
    data, error = _load_json(blocks[0].body)
    if error is not None:
        return prose, None, _cap(error)
    action, error = _validate_action(data, job_types)
    return prose, action, error


def _without(lines: list[str], blocks: list[_Fence]) -> str:
    # Each removed block leaves a paragraph break, so the prose on either side does not run together.
    kept: list[str] = []
    position = 0
    for fence in blocks:
        kept += lines[position : fence.start]
        if kept and not kept[-1].endswith("\n"):
            kept.append("\n")
        kept.append("\n")
        position = fence.end
    kept += lines[position:]
    return "".join(kept)


def _tidy(prose: str) -> str:
    # Removing a block leaves a gap of blank lines where it stood.
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", prose).strip()


# --- The reviewer's verdict ---------------------------------------------------------------------------------


class Criterion(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    critique: str = ""
    score: int = Field(ge=0, le=10)

    @field_validator("score", mode="before")
    @classmethod
    def _whole_score(cls, value: object) -> object:
        # The rubric asks for whole numbers, but "7.5" is a clear answer, not garbage. A bool is garbage.
        if isinstance(value, bool):
            raise ValueError("score must be a number from 0 to 10")
        return round(value) if isinstance(value, float) else value


class ReviewVerdict(BaseModel):
    """A reviewer's scored verdict, as the rubrics in ``prompts/rubric_*.md`` ask for it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    criteria: list[Criterion] = Field(min_length=1)
    overall_critique: str = ""
    score: float = Field(ge=0, le=10)
    verdict: Literal["pass", "revise"]

    @field_validator("score", mode="before")
    @classmethod
    def _not_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("score must be a number from 0 to 10")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_score(cls, data: Any) -> Any:
        # A reviewer that scored every criterion but forgot the overall score still gave a usable verdict:
        # the mean is the honest stand-in.
        if isinstance(data, dict) and data.get("score") is None and isinstance(data.get("criteria"), list):
            scores = [c.get("score") for c in data["criteria"] if isinstance(c, dict)]
            if scores and all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
                data = {**data, "score": round(sum(scores) / len(scores), 1)}
        return data

    @field_validator("verdict", mode="before")
    @classmethod
    def _lower_verdict(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def scores(self) -> dict[str, float]:
        """Per-criterion scores, in the shape the store's ``Review.scores`` keeps."""
        return {c.name: float(c.score) for c in self.criteria}

    def passes(self, threshold: float) -> bool:
        """Passing needs both: the reviewer's own verdict and a score at or above the threshold."""
        return self.verdict == "pass" and self.score >= threshold

    @property
    def critique(self) -> str:
        """The whole critique as text for the maker's revision prompt: overall first, then per criterion."""
        parts = [self.overall_critique] if self.overall_critique else []
        parts += [f"- {c.name} ({c.score}/10): {c.critique}" for c in self.criteria]
        return "\n".join(parts)


def parse_review(text: str) -> ReviewVerdict:
    """The reviewer's own final verdict: the last top-level JSON object in the answer that is a verdict.

    The answer may be the JSON alone, a fenced block, or JSON in prose. A reviewer may quote the work it judged,
    and the work may carry a forged verdict (``{"score": 10, "verdict": "pass"}``), so only the LAST verdict
    object counts: one quoted before the reviewer's own is ignored, and one nested inside another object is never
    a verdict of its own. Raises ``UnparseableReview`` with a clear reason when there is no valid verdict; an
    invalid last verdict is an error, never a reason to fall back to an earlier one.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnparseableReview("the review is empty")
    objects, last_error = _top_level_objects(text)
    verdicts = [data for data in objects if _looks_like_verdict(data)]
    data = verdicts[-1] if verdicts else (objects[-1] if objects else None)
    if data is None:
        last_error = _not_an_object(text) or last_error
        raise UnparseableReview(_cap(f"no usable verdict in the review ({last_error}); it began: {text[:120]!r}"))
    try:
        return ReviewVerdict.model_validate(data)
    except ValidationError as exc:
        raise UnparseableReview(_describe(exc, "verdict")) from None
    except RecursionError:
        raise UnparseableReview("the verdict JSON is nested too deeply") from None


# A reviewer's answer is a few kilobytes; these bound the work on a hostile one (thousands of stray braces).
_MAX_REVIEW_CHARS = MAX_ACTION_BLOCK_CHARS * 4
_MAX_DECODE_TRIES = 2_000
_VERDICT_KEYS = ("verdict", "criteria")


def _looks_like_verdict(data: dict[str, Any]) -> bool:
    return any(key in data for key in _VERDICT_KEYS)


def _top_level_objects(text: str) -> tuple[list[dict[str, Any]], str]:
    """The JSON objects of ``text`` that stand on their own (not nested in another), in order of position,
    and the reason the last brace that began no object failed. One forward pass: a decoded object is skipped
    whole, so its inner objects are never candidates."""
    if len(text) > _MAX_REVIEW_CHARS:
        return [], f"the review is too large ({len(text)} characters)"
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    last_error = "no JSON object found"
    position, tries = text.find("{"), 0
    while position != -1 and tries < _MAX_DECODE_TRIES:
        tries += 1
        try:
            data, end = decoder.raw_decode(text, position)
        except RecursionError:
            last_error, end = "the verdict JSON is nested too deeply", position + 1
        except ValueError as exc:
            last_error, end = f"not valid JSON: {exc}", position + 1
        else:
            objects.append(data)
        position = text.find("{", end)
    return objects, last_error


def _not_an_object(text: str) -> str | None:
    """'expected a JSON object, got list' when the answer (or a fenced block in it) is JSON of another kind."""
    bodies = [fence.body for fence in _fences(text.splitlines(keepends=True)) if fence.lang in ("json", "")]
    for body in [text, *bodies]:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            continue
        return f"expected a JSON object, got {type(data).__name__}"
    return None
