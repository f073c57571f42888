"""The persona's reply read: prose for the operator, and the actions it asks for in one JSON block.

The actions arrive as JSON inside free text written by a model, so the parser assumes the text may be garbage,
huge or hostile. ``read_reply`` never raises: the operator must always get the persona's prose, and a broken
action is reported, not fatal. A reply with any broken action is acted on not at all. What the actions do is
``engine.persona_actions``.

The verbs (``ACTION_VERBS``): enqueue, cancel, retry, approve, answer, schedule, remember, forget, project, ask
and none. Models ignore unknown fields, so a field added later (a workspace, a deadline) does not break a reply
written for it: the schema grows by adding fields and verbs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.fences import MAX_BLOCK_CHARS, Fence, cap, describe_invalid, fences
from engine.settings import JOB_TYPES

__all__ = [
    "ACTION_VERBS",
    "AnswerAction",
    "AskAction",
    "CancelAction",
    "EnqueueAction",
    "ForgetAction",
    "NoAction",
    "PersonaAction",
    "PersonaReply",
    "ProjectAction",
    "RememberAction",
    "RetryAction",
    "ScheduleAction",
    "parse_persona_reply",
    "read_reply",
]

MAX_TITLE_CHARS = 200
MAX_PROMPT_CHARS = 50_000
MAX_ACTIONS = 8  # per reply; more is a runaway model, refused whole


class _Action(BaseModel):
    # Models add chatter fields ("reason", "notes"); ignoring them costs nothing and keeps good actions.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def _job_ref(value: object) -> object:
    """``12``, ``"12"`` or ``"#12"`` -> 12; anything else is left for the int field to refuse."""
    if isinstance(value, str) and value.strip().removeprefix("#").isdigit():
        return int(value.strip().removeprefix("#"))
    return value


JobRef = Annotated[int, BeforeValidator(_job_ref), Field(ge=1, le=2**63 - 1)]


def _job_type(value: object, info: ValidationInfo) -> object:
    if not isinstance(value, str):
        return value  # the str field reports the wrong type
    normalised = value.strip().lower()
    allowed = _allowed_types(info)
    if normalised not in allowed:
        raise ValueError(f"unknown job type {value[:40]!r} (one of: {', '.join(allowed)})")
    return normalised


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


JobType = Annotated[str, BeforeValidator(_job_type)]
OptionalName = Annotated[Annotated[str, Field(max_length=200)] | None, BeforeValidator(_blank_is_none)]


class EnqueueAction(_Action):
    """Queue a job on the operator's behalf. ``priority`` None: the operator's lane (see ``lane``)."""

    action: Literal["enqueue"]
    type: JobType
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    project: OptionalName = None
    priority: Literal["operator", "high", "normal", "low"] | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _lower_priority(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value


class CancelAction(_Action):
    action: Literal["cancel"]
    job: JobRef


class RetryAction(_Action):
    action: Literal["retry"]
    job: JobRef
    other_backend: bool = False


class ApproveAction(_Action):
    action: Literal["approve"]
    job: JobRef


class AnswerAction(_Action):
    """The operator's answer to a worker's question (a job in needs_input)."""

    action: Literal["answer"]
    job: JobRef
    text: str = Field(min_length=1, max_length=10_000)


class ScheduleAction(_Action):
    """A recurring job: ``every`` ("30m", "2h") or ``daily`` ("07:00"), exactly one."""

    action: Literal["schedule"]
    type: JobType
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    name: OptionalName = None
    every: str | None = Field(None, max_length=20)
    daily: str | None = Field(None, max_length=10)
    project: OptionalName = None

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleAction:
        if (self.every is None) == (self.daily is None):
            raise ValueError("give exactly one of every (e.g. \"30m\") or daily (e.g. \"07:00\")")
        return self


class RememberAction(_Action):
    action: Literal["remember"]
    text: str = Field(min_length=1, max_length=2_000)


class ForgetAction(_Action):
    action: Literal["forget"]
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")


class ProjectAction(_Action):
    """Create a project (when it does not exist) and/or queue its next step (``next``)."""

    action: Literal["project"]
    name: str = Field(min_length=1, max_length=64)
    goal: str = Field("", max_length=2_000)
    next: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    type: JobType = "analysis"


class AskAction(_Action):
    """A clarifying question when the request is ambiguous, instead of guessing."""

    action: Literal["ask"]
    question: str = Field(min_length=1, max_length=1_000)


class NoAction(_Action):
    """The persona considered acting and decided not to."""

    action: Literal["none"]


AnyAction = (
    EnqueueAction | CancelAction | RetryAction | ApproveAction | AnswerAction | ScheduleAction | RememberAction
    | ForgetAction | ProjectAction | AskAction | NoAction
)
PersonaAction = Annotated[AnyAction, Field(discriminator="action")]
_PERSONA_ACTION: TypeAdapter[AnyAction] = TypeAdapter(PersonaAction)
ACTION_VERBS = (
    "enqueue", "cancel", "retry", "approve", "answer", "schedule", "remember", "forget", "project", "ask", "none",
)


def _allowed_types(info: ValidationInfo) -> tuple[str, ...]:
    # The caller may pass the configured job types as validation context; "chat" is never queueable,
    # because a chat job is the persona itself and queueing one would loop.
    context = info.context if isinstance(info.context, dict) else {}
    types: Iterable[str] = context.get("job_types") or JOB_TYPES
    return tuple(t for t in types if t != "chat")


@dataclass
class PersonaReply:
    """The persona's reply read: prose for the operator, the valid actions, and what was wrong. A reply with
    any error is acted on not at all (``actions`` is then empty): never half of what it asked."""

    prose: str
    actions: list[AnyAction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# --- The persona's reply ------------------------------------------------------------------------------------

# In a json block even a broken key ('action': or action:) shows an attempted action worth reporting;
# "transaction": does not.
_LOOSE_ACTION_KEY_RE = re.compile(r"""(?<![\w"'])["']?actions?["']?\s*:""")
_ACTION_KEY_RE = re.compile(r'"actions?"\s*:')


def _is_action_block(fence: Fence) -> bool:
    # A json (or unlabelled) block mentioning "action" is meant for the engine; other code blocks in the
    # reply (a snippet of Python, a JSON example without "action") are content for the operator and stay.
    if fence.lang == "json":
        return bool(_LOOSE_ACTION_KEY_RE.search(fence.body))
    return fence.lang == "" and bool(_ACTION_KEY_RE.search(fence.body))


def _load_json(text: str) -> tuple[Any, str | None]:
    if len(text) > MAX_BLOCK_CHARS:
        return None, f"action block too large ({len(text)} characters)"
    try:
        return json.loads(text), None
    except RecursionError:
        # json.loads recurses per nesting level; "[[[[...]]]]" from a hostile or looping model would
        # otherwise escape as RecursionError.
        return None, "action block is nested too deeply"
    except ValueError as exc:
        return None, f"action block is not valid JSON: {exc}"


def _validate_action(data: Any, context: dict[str, Any] | None) -> tuple[AnyAction | None, str | None]:
    if not isinstance(data, dict):
        return None, f"action block must be a JSON object, not {type(data).__name__}"
    verb = data.get("action")
    if isinstance(verb, str):
        verb = verb.strip().lower()
        data = {**data, "action": verb}
        if verb not in ACTION_VERBS:
            return None, cap(f"invalid action: unknown action {verb[:40]!r} (one of: {', '.join(ACTION_VERBS)})")
    try:
        return _PERSONA_ACTION.validate_python(data, context=context), None
    except ValidationError as exc:
        return None, describe_invalid(exc, tags=ACTION_VERBS)
    except RecursionError:
        return None, "action block is nested too deeply"


def _validate_block(data: Any, job_types: Iterable[str] | None) -> tuple[list[AnyAction], list[str]]:
    """One action object, or ``{"actions": [...]}`` for several; every one validated before any is used."""
    context = {"job_types": tuple(job_types)} if job_types is not None else None
    if isinstance(data, dict) and "action" not in data and isinstance(data.get("actions"), list):
        items: list[Any] = data["actions"]
        if not items:
            return [], []
        if len(items) > MAX_ACTIONS:
            return [], [f"the reply carried {len(items)} actions; at most {MAX_ACTIONS} are allowed"]
    else:
        items = [data]
    actions: list[AnyAction] = []
    errors: list[str] = []
    for number, item in enumerate(items, start=1):
        action, error = _validate_action(item, context)
        if action is not None:
            actions.append(action)
        if error is not None:
            errors.append(error if len(items) == 1 else cap(f"action {number}: {error}"))
    return ([], errors) if errors else (actions, [])


def read_reply(text: object, *, job_types: Iterable[str] | None = None) -> PersonaReply:
    """Split the persona's reply into prose for the operator, its validated actions, and errors.

    The actions are in the one fenced ``json`` block (or unlabelled block) that names an ``"action"`` (or holds
    ``"actions": [...]``); a reply that is nothing but such an object is accepted too. The block is removed from
    the prose; all other text, including other code blocks, is kept. Errors are returned, never raised (invalid
    JSON, wrong shape, unknown verb or job type, more than one block), and a reply with any error carries no
    action at all. ``job_types`` overrides the queueable types (default ``engine.settings.JOB_TYPES``; ``chat``
    is never queueable).
    """
    if not isinstance(text, str):
        return PersonaReply("", errors=[f"reply is not text ({type(text).__name__})"])
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}") and _ACTION_KEY_RE.search(stripped):
        # The whole reply is the action object: no prose to keep, whatever becomes of the action.
        data, error = _load_json(stripped)
        if error is not None:
            return PersonaReply(stripped, errors=[cap(error)])
        return PersonaReply("", *_validate_block(data, job_types))
    lines = text.splitlines(keepends=True)
    blocks = [fence for fence in fences(lines) if _is_action_block(fence)]
    if not blocks:
        return PersonaReply(text.strip())
    prose = _tidy(_without(lines, blocks))
    if len(blocks) > 1:
        return PersonaReply(prose, errors=[f"the reply carried {len(blocks)} action blocks; only one is allowed"])
    data, error = _load_json(blocks[0].body)
    if error is not None:
        return PersonaReply(prose, errors=[cap(error)])
    return PersonaReply(prose, *_validate_block(data, job_types))


def parse_persona_reply(
    text: object, *, job_types: Iterable[str] | None = None
) -> tuple[str, AnyAction | None, str | None]:
    """``read_reply`` for one action: (prose, the first action or None, the errors joined or None)."""
    reply = read_reply(text, job_types=job_types)
    return reply.prose, (reply.actions[0] if reply.actions else None), ("; ".join(reply.errors) or None)


def _without(lines: list[str], blocks: list[Fence]) -> str:
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
