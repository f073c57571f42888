"""What the persona's actions do: each through ``Control``, the same verbs and checks as the slash commands.

``complete_chat`` turns the persona's reply into the chat job's ``Completion``. Before it is written:

- a reply with any malformed or unknown action is acted on not at all, and the operator is told why;
- actions that destroy or spend (cancel, approve, forget, a schedule more often than
  ``[chat] confirm_schedule_below_s``, a job estimated above ``[chat] confirm_cost_usd``) are staged and
  the reply carries a button for each: ``/confirm`` (the button's command) runs it, ``/drop`` drops it;
- the other actions run now. Each has an idempotency key (the chat job and the action's place in the reply),
  claimed in the store before it runs, so a chat turn run twice (a crash, a redelivered update) never acts twice.

Jobs the persona queues go into the completion itself, in the operator's lane unless it said otherwise, and are
announced with their buttons in the same transaction as the reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from engine import notices, schedule_times
from engine.control import Control
from engine.errors import OPERATOR_ERRORS, describe_error
from engine.job_factory import new_job
from engine.models import Job, JobState, NewJob, Priority, Source
from engine.persona import (
    AnswerAction,
    AnyAction,
    ApproveAction,
    AskAction,
    CancelAction,
    EnqueueAction,
    ForgetAction,
    NoAction,
    PersonaAction,
    ProjectAction,
    RememberAction,
    RetryAction,
    ScheduleAction,
    read_reply,
)
from engine.settings import Settings
from engine.store import Completion, NewAttempt
from engine.workspace import sanitize_name

if TYPE_CHECKING:  # the command line builds PersonaActions too, without the backends' modules (httpx)
    from engine.backends.base import BackendResult

__all__ = ["PersonaActions", "complete_chat", "confirmation_needed", "lane"]

log = logging.getLogger(__name__)

Verb = Callable[[str], Awaitable[str]]
_ADAPTER: TypeAdapter[AnyAction] = TypeAdapter(PersonaAction)
_PENDING = "persona:pending:"
_DONE = "persona:done:"
# An upper-end guess of a queued job's size, for the cost check (a prompt and its context in, a long answer out).
_GUESS_TOKENS_OUT = 8_000
_GUESS_CONTEXT_TOKENS = 20_000


def lane(action: EnqueueAction, settings: Settings) -> Priority:
    """Work asked for in the operator's own message runs in the operator lane: "operator" for quick (tier 1)
    jobs, "high" for the rest; the persona lowers it ("normal", "low") when the operator said it can wait."""
    if action.priority is not None:
        return Priority.parse(action.priority)
    return Priority.OPERATOR if settings.job_type(action.type).tier == 1 else Priority.HIGH


def estimated_cost_usd(settings: Settings, job_type: str, prompt: str) -> float:
    """The most a job of ``job_type`` may cost on the dearest pay-per-token backend of its tier, or its budget."""
    from engine.routing import CHARS_PER_TOKEN  # loads the backends' modules: only where a turn is completed

    config = settings.job_type(job_type)
    if config.budget_usd is not None:
        return config.budget_usd
    tokens_in = _GUESS_CONTEXT_TOKENS + len(prompt) / CHARS_PER_TOKEN
    prices = [
        (tokens_in * b.price_in_per_mtok + _GUESS_TOKENS_OUT * b.price_out_per_mtok) / 1e6
        for b in settings.backends
        if b.pay_per_token and b.tier == config.tier
    ]
    return max(prices, default=0.0)


def confirmation_needed(action: AnyAction, settings: Settings) -> str | None:
    """Why ``action`` waits for the operator's button, or None when it may run now."""
    if isinstance(action, CancelAction | ApproveAction | ForgetAction):
        return "it cannot be undone"
    if isinstance(action, ScheduleAction) and action.every is not None:
        try:
            interval_s = schedule_times.parse_every(action.every)
        except ValueError:
            return None  # Control refuses it with the slash command's words
        if interval_s < settings.chat.confirm_schedule_below_s:
            return "it runs more often than hourly"
    if isinstance(action, EnqueueAction | ProjectAction):
        prompt = action.prompt if isinstance(action, EnqueueAction) else action.next
        if prompt:
            cost = estimated_cost_usd(settings, action.type, prompt)
            if cost > settings.chat.confirm_cost_usd:
                return f"it may cost up to ${cost:.2f}"
    return None


def describe(action: AnyAction) -> str:
    """One line naming what the action would do, for the confirmation."""
    match action:
        case EnqueueAction():
            return f"queue a {action.type} job: {action.title}"
        case CancelAction():
            return f"cancel job #{action.job}"
        case ApproveAction():
            return f"approve job #{action.job} and mark it done"
        case ForgetAction():
            return f"forget memory {action.id}"
        case ScheduleAction():
            when = f"every {action.every}" if action.every else f"daily at {action.daily}"
            return f"schedule a {action.type} job {when}: {action.prompt[:80]}"
        case ProjectAction():
            return f"project {action.name}: queue its next step"
        case _:
            return action.action


class PersonaActions:
    """Runs persona actions through ``control``; ``memory_verbs`` are the /remember and /forget commands (the
    composition root hands them in; without them memory actions say memory is unavailable)."""

    def __init__(self, control: Control, memory_verbs: Mapping[str, Verb] | None = None) -> None:
        self.control = control
        self.memory_verbs = dict(memory_verbs or {})

    async def run_once(self, key: str, action: AnyAction, chat_id: int | None) -> str:
        """Run ``action`` unless its key was claimed already; the line to show the operator."""
        if not await self.control.store.kv_claim(f"{_DONE}{key}", "done"):
            return f"(already done: {describe(action)})"
        return await self.run(action, chat_id)

    async def run(self, action: AnyAction, chat_id: int | None) -> str:
        """Do it now, with the slash command's checks; a refusal is the answer, never an exception."""
        try:
            return await self._run(action, chat_id)
        except OPERATOR_ERRORS as exc:
            return f"Cannot {describe(action)}: {describe_error(exc)}"

    async def _run(self, action: AnyAction, chat_id: int | None) -> str:
        control = self.control
        match action:
            case CancelAction():
                return f"Job #{(await control.cancel(action.job)).id} cancelled."
            case RetryAction():
                job = await (control.reroute if action.other_backend else control.retry)(action.job)
                return f"Job #{job.id} queued again."
            case ApproveAction():
                return f"Job #{(await control.approve(action.job)).id} approved by you and marked done."
            case AnswerAction():
                job = await control.answer(action.job, action.text)
                return f"Job #{job.id} continues with your answer."
            case ScheduleAction():
                return await self._schedule(action)
            case ProjectAction():
                return await self._project(action, chat_id)
            case EnqueueAction():
                job, _ = await control.add_job(
                    action.prompt, type=action.type, title=action.title, project=action.project,
                    priority=lane(action, control.settings), source=Source.CHAT, chat_id=chat_id,
                )
                return f"Queued #{job.id} · {job.type}: {job.title}"
            case RememberAction() | ForgetAction():
                verb = self.memory_verbs.get(action.action)
                if verb is None:
                    return "Memory is not available, so nothing was remembered or forgotten."
                return await verb(action.text if isinstance(action, RememberAction) else action.id)
            case AskAction():
                return action.question
            case NoAction():
                return ""
        raise ValueError(f"unknown action {action.action!r}")  # pragma: no cover - the union is exhaustive

    async def _schedule(self, action: ScheduleAction) -> str:
        name = action.name or sanitize_name(f"{action.type}-{'-'.join(action.prompt.split()[:3])}".lower())[:40]
        taken = {s.name for s in await self.control.store.list_schedules()}
        name = next(n for n in (name, *(f"{name}-{i}" for i in range(2, 1000))) if n not in taken)
        schedule = await self.control.add_schedule(
            name, action.prompt, type=action.type, every=action.every, daily=action.daily, project=action.project
        )
        when = f"every {action.every}" if action.every else f"daily at {action.daily}"
        return f"Schedule {schedule.name} added: a {schedule.job_type} job {when}."

    async def _project(self, action: ProjectAction, chat_id: int | None) -> str:
        control = self.control
        project = await control.store.get_project(action.name)
        said = []
        if project is None:
            project = await control.add_project(action.name, action.goal)
            said.append(f"Project {project.name} created.")
        if action.next:
            job, _ = await control.add_job(
                action.next, type=action.type, title=f"{project.name}: next step", project=project.name,
                priority=Priority.HIGH, source=Source.CHAT, chat_id=chat_id,
            )
            await control.store.touch_project(project.name)
            said.append(f"Queued #{job.id} · {job.type}: the next step of {project.name}.")
        return " ".join(said) or f"Project {project.name} exists already."

    # ---- confirmations ----------------------------------------------------------------------------------

    async def stage(self, key: str, action: AnyAction, chat_id: int | None) -> None:
        record = {"action": action.model_dump(mode="json"), "chat_id": chat_id}
        await self.control.store.kv_put(f"{_PENDING}{key}", json.dumps(record))

    async def confirm(self, key: str) -> str:
        """The operator pressed the button (or sent /confirm KEY): run the staged action, once."""
        staged = await self._staged(key)
        if isinstance(staged, str):
            return staged
        action, chat_id = staged
        return await self.run_once(key, action, chat_id)

    async def drop(self, key: str) -> str:
        staged = await self._staged(key)
        if isinstance(staged, str):
            return staged
        if not await self.control.store.kv_claim(f"{_DONE}{key}", "dropped"):
            return "That was already decided."
        return f"Dropped: {describe(staged[0])}."

    async def _staged(self, key: str) -> tuple[AnyAction, int | None] | str:
        raw = await self.control.store.kv_get(f"{_PENDING}{key.strip()}") if key.strip() else None
        if raw is None:
            return "Nothing waits for a confirmation under that key."
        try:
            record = json.loads(raw)
            return _ADAPTER.validate_python(record["action"]), record.get("chat_id")
        except (ValueError, KeyError, TypeError, ValidationError):
            log.warning("a staged persona action under %s could not be read", key)
            return "That confirmation could not be read; ask again."

    def commands(self) -> dict[str, Verb]:
        """``/confirm KEY`` and ``/drop KEY``: what the confirmation buttons send (and console users type)."""
        return {"confirm": self.confirm, "drop": self.drop}


# ---- the persona's turn, completed ------------------------------------------------------------------------


async def complete_chat(
    settings: Settings,
    job: Job,
    attempts: list[NewAttempt],
    result: BackendResult,
    owner: str,
    actions: PersonaActions,
) -> Completion:
    """The persona answered: act on its reply (see the module's docstring), then send its words and outcomes."""
    reply = read_reply(result.text, job_types=settings.job_types)
    lines: list[str] = []
    buttons: list[list[str]] = []
    new_jobs: list[NewJob] = []
    if reply.errors:
        lines.append(f"(I did not act on this: {'; '.join(reply.errors)[:400]}. Nothing was done.)")
    for index, action in enumerate(reply.actions):
        key = f"{job.id}.{index}"
        why = confirmation_needed(action, settings)
        if why is not None:
            await actions.stage(key, action, job.chat_id)
            lines.append(f"Waiting for your OK ({why}): {describe(action)}. (/confirm {key})")
            buttons += [[f"✅ {describe(action)[:40]}", f"act:{key}"], ["✖️ Don't", f"drop:{key}"]]
        elif isinstance(action, EnqueueAction):
            new_jobs.append(_queued(settings, job, action, index))
        elif not isinstance(action, NoAction):
            lines.append(await actions.run_once(key, action, job.chat_id))
    text = "\n\n".join(part for part in [reply.prose, *lines] if part) or ("Queued." if new_jobs else "(no answer)")
    reply_row = notices.info(f"job:{job.id}:reply", text, chat_id=job.chat_id, job_id=job.id)
    reply_row = reply_row.model_copy(update={"kind": "chat_reply", "payload": {"buttons": buttons} if buttons else {}})
    return Completion(
        job_id=job.id,
        owner=owner,
        to_state=JobState.DONE,
        reason="persona answered",
        attempts=attempts,
        fields={"result_text": text, "result_summary": notices.summarize(text), "session_id": result.session_id},
        outbox=[reply_row],
        new_jobs=new_jobs,
        announce_new_jobs=True,
        assistant_message=text,
    )


def _queued(settings: Settings, job: Job, action: EnqueueAction, index: int) -> NewJob:
    return new_job(
        settings,
        type=action.type,
        prompt=action.prompt,
        title=action.title,
        project=action.project,
        priority=lane(action, settings),
        source=Source.CHAT,
        chat_id=job.chat_id,
        parent_id=job.id,
        # The store keeps one live job per key: a chat turn run twice queues it once.
        idempotency_key=f"chat:{job.id}:action" + (f":{index}" if index else ""),
    )
