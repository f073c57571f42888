"""The persona: its reply read (prose for the operator, at most one JSON action) and its turn completed.

The action arrives as JSON inside free text written by a model, so the parser assumes the text may be garbage,
huge or hostile. ``parse_persona_reply`` never raises: the operator must always get the persona's prose, and a
broken action is reported, not fatal. ``complete_chat`` turns the reply into the chat job's ``Completion``: the
words go to the operator, and the job the action asks for is queued in the same transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from engine import notices
from engine.backends.base import BackendResult
from engine.fences import MAX_BLOCK_CHARS, Fence, cap, describe_invalid, fences
from engine.job_factory import new_job
from engine.models import Job, JobState, Priority, Source
from engine.settings import JOB_TYPES, Settings
from engine.store import Completion, NewAttempt

__all__ = ["EnqueueAction", "NoAction", "PersonaAction", "complete_chat", "parse_persona_reply"]

MAX_TITLE_CHARS = 200
MAX_PROMPT_CHARS = 50_000


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

# In a json block even a broken key ('action': or action:) shows an attempted action worth reporting;
# "transaction": does not.
_LOOSE_ACTION_KEY_RE = re.compile(r"""(?<![\w"'])["']?action["']?\s*:""")
_ACTION_KEY_RE = re.compile(r'"action"\s*:')


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
        return None, describe_invalid(exc)
    except RecursionError:
        return None, "action block is nested too deeply"


def parse_persona_reply(
    text: object, *, job_types: Iterable[str] | None = None
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
            return stripped, None, cap(error)
        action, error = _validate_action(data, job_types)
        return "", action, error
    lines = text.splitlines(keepends=True)
    blocks = [fence for fence in fences(lines) if _is_action_block(fence)]
    if not blocks:
        return text.strip(), None, None
    prose = _tidy(_without(lines, blocks))
    if len(blocks) > 1:
        return prose, None, f"the reply carried {len(blocks)} action blocks; only one is allowed"
    data, error = _load_json(blocks[0].body)
    if error is not None:
        return prose, None, cap(error)
    action, error = _validate_action(data, job_types)
    return prose, action, error


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


# --- The persona's turn, completed --------------------------------------------------------------------------


def complete_chat(
    settings: Settings,
    job: Job,
    attempts: list[NewAttempt],
    result: BackendResult,
    owner: str,
) -> Completion:
    """The persona answered: send its words, and queue the job its action asks for."""
    prose, action, error = parse_persona_reply(result.text, job_types=settings.job_types)
    text = prose or ("Queued." if isinstance(action, EnqueueAction) else "(no answer)")
    if error:
        text += f"\n\n(I tried to queue something but the request was malformed: {error[:200]})"
    reply = notices.info(f"job:{job.id}:reply", text, chat_id=job.chat_id, job_id=job.id)
    reply = reply.model_copy(update={"kind": "chat_reply"})
    new_jobs = []
    if isinstance(action, EnqueueAction):
        new_jobs.append(
            new_job(
                settings,
                type=action.type,
                prompt=action.prompt,
                title=action.title,
                project=action.project,
                priority=Priority.parse(action.priority),
                source=Source.CHAT,
                chat_id=job.chat_id,
                parent_id=job.id,
                idempotency_key=f"chat:{job.id}:action",
            )
        )
    return Completion(
        job_id=job.id,
        owner=owner,
        to_state=JobState.DONE,
        reason="persona answered",
        attempts=attempts,
        fields={"result_text": text, "result_summary": notices.summarize(text), "session_id": result.session_id},
        outbox=[reply],
        new_jobs=new_jobs,
        announce_new_jobs=True,
        assistant_message=text,
    )
