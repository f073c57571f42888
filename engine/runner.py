"""Running one claimed job: route it, call backends down the chain, act on each failure class, finish it.

The runner never writes a job's state itself: it builds a ``Completion`` and hands it to the engine,
which applies it fenced on the lease (grouped with others into one transaction).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import prompts
from engine import gates, notices
from engine.backends.base import BackendRequest, BackendResult
from engine.capacity import Capacity
from engine.clock import Clock
from engine.failures import Failure, FailureClass
from engine.health import PAUSING, BackendHealth, hm
from engine.models import Job, JobState
from engine.redaction import redact
from engine.routing import CHARS_PER_TOKEN, RoutePlan, Router
from engine.settings import BackendConfig, Settings
from engine.store import Completion, LeaseLost, NewAttempt, NewOutbox, Store
from engine.workspace import Workspace

log = logging.getLogger(__name__)

_FALL_THROUGH = {
    FailureClass.RATE_LIMITED,
    FailureClass.QUOTA,
    FailureClass.OVERLOADED,
    FailureClass.SERVER_ERROR,
    FailureClass.TIMEOUT,
    FailureClass.AUTH,
    FailureClass.EMPTY_OUTPUT,
    FailureClass.UNKNOWN,
    FailureClass.CONTEXT_OVERFLOW,
    FailureClass.CONTENT_REFUSED,
}
RETRY_BASE_S = 30.0
SNOOZE_BUSY_S = 5.0
# A job waiting in needs_input keeps its worker's question in ``progress`` behind this prefix.
QUESTION_PREFIX = "Question for the operator: "
Submit = Callable[[Completion], Awaitable[Job | None]]


@dataclass
class JobContext:
    """What memory contributes to a job: the core identity (stable) and relevant memories (variable)."""

    core: str = ""
    memories: str = ""


class EngineHooks(Protocol):
    async def context_for(self, job: Job) -> JobContext: ...

    async def job_finished(self, job: Job) -> None: ...


class NoHooks:
    async def context_for(self, job: Job) -> JobContext:
        return JobContext()

    async def job_finished(self, job: Job) -> None:
        return None


@dataclass
class _Run:
    """The bookkeeping of one run of one job."""

    job: Job
    attempts: list[NewAttempt] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    last_failure: Failure | None = None
    progress: str | None = None
    has_workspace: bool = False  # a worker with files ran: look for its question.md
    lease_lost: bool = False


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        capacity: Capacity,
        clock: Clock,
        workspace: Workspace,
        hooks: EngineHooks,
        owner: str,
        submit: Submit,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._capacity = capacity
        self._clock = clock
        self._workspace = workspace
        self._hooks = hooks
        self._owner = owner
        self._submit = submit
        self._health = BackendHealth(settings, store, router, clock)

    async def run(self, job: Job) -> None:
        run = _Run(job)
        try:
            completion = await self._route_and_call(run)
        except LeaseLost:
            log.info("job %s: lease lost, stopping", job.id)
            return
        if completion is None:
            return
        completion.snapshot = job  # as claimed: the store fences on it instead of reading the job again
        finished = await self._submit(completion)
        if finished is not None and finished.state in (JobState.DONE, JobState.FAILED, JobState.NEEDS_HUMAN):
            await self._hooks.job_finished(finished)

    async def _route_and_call(self, run: _Run) -> Completion | None:
        job = run.job
        states = self._router.states  # refreshed once per dispatch, and after every backend failure
        exclude = job.maker_family if job.type == "review" else None
        request = await self._build_request(job)
        plan = self._router.plan(
            job.type,
            states,
            prompt_chars=len(request.system) + len(request.prompt),
            exclude_family=exclude,
            spent_today_usd=await self._spent_today(),
            avoid_backend=job.avoid_backend,
        )
        # The routing history: a backend passed over for its state (paused, disabled, budget) is an event of the
        # job. Routine reasons (a busy backend, one off in the config) are not: no extra write per healthy job.
        skipped = {n: r for n, r in plan.skipped.items() if r.startswith(("paused", "disabled:", "daily budget"))}
        if skipped:
            reason = "skipped " + "; ".join(f"{n}: {r}" for n, r in skipped.items())
            await self._store.add_event(job.id, "routing", reason, {"skipped": skipped})
        remaining = list(plan.candidates)
        while remaining:
            config = remaining.pop(0)
            if self._job_budget_spent(run):
                break
            block = await self._budget_block(config)  # before each call: a fallback may not overspend either
            if block is not None:
                plan.blocked_by_budget |= block == "spent"  # else calls in flight may use it up: wait briefly
                continue
            result = await self._call(run, config, request)
            if result.ok:
                return await self._on_success(run, config, result)
            failure = result.failure
            assert failure is not None
            verdict = await self._act_on_failure(run, config, failure)
            if verdict == "stop":
                break
            remaining = self._narrow(remaining, config, failure)
        return await self._on_exhausted(run, plan)

    async def _build_request(self, job: Job) -> BackendRequest:
        context = await self._hooks.context_for(job)
        type_config = self._settings.job_type(job.type)
        if job.type == "chat":
            system = prompts.persona_system(self._settings.persona_name, self._settings.job_types, context.core)
            history = await self._store.recent_messages(job.chat_id or 0, limit=12)
            convo = "\n".join(f"{m.role.capitalize()}: {m.text}" for m in history if m.job_id != job.id)
            convo = prompts.untrusted("recent conversation", convo) if convo.strip() else ""
            prompt = f"{_section('Relevant memories', context.memories)}{_section('Recent conversation', convo)}"
            prompt += f"Operator: {job.prompt}"
        else:
            system = prompts.job_instructions(job.type) + _section("Core memory", context.core)
            task = await gates.revision_prompt(self._store, job) if job.revision > 0 else job.prompt
            prompt = _section("Relevant memories", context.memories) + task
        return BackendRequest(
            job_id=job.id,
            job_type=job.type,
            system=system,
            prompt=prompt,
            session_id=job.session_id,
            max_turns=type_config.max_turns,
            permission_mode=type_config.permission_mode,
            allowed_tools=type_config.allowed_tools,
            timeout_s=type_config.timeout_s,
            max_budget_usd=type_config.budget_usd,
        )

    async def _call(self, run: _Run, config: BackendConfig, request: BackendRequest) -> BackendResult:
        job = run.job
        needs_files = self._settings.job_type(job.type).require_test_evidence
        if config.kind in ("claude_cli", "codex_cli") or needs_files:
            context = await self._hooks.context_for(job)
            path = self._workspace.prepare(
                job, memories=context.memories, core=context.core, instructions=prompts.job_instructions(job.type)
            )
            request = request.model_copy(
                update={"workspace": path, "timeout_s": min(request.timeout_s, config.timeout_s)}
            )
            run.has_workspace = True
        backend = self._router.backend(config.name)
        self._router.running[config.name] += 1
        reserved = _estimated_cost(config, request)
        self._router.in_flight_usd += reserved
        started = self._clock.now()
        # The call runs in this task; the heartbeat cancels this task if the lease is lost (swept, cancelled).
        # Cancelling this task (shutdown, sweep) cancels the backend call with it, killing a CLI worker.
        heartbeat = asyncio.create_task(self._heartbeat(run, asyncio.current_task()))
        try:
            result = await backend.run(request, self._progress_sink(run))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if run.lease_lost and task is not None and task.uncancel() == 0:
                raise LeaseLost(f"job {job.id}") from None
            raise
        finally:
            heartbeat.cancel()
            self._router.running[config.name] -= 1
            self._router.in_flight_usd -= reserved
        result = self._validate_output(job, result)
        run.tried.append(config.name)
        self._record_attempt(run, config, result, started)
        return result

    def _validate_output(self, job: Job, result: BackendResult) -> BackendResult:
        """A success status without usable output is a failure (a model that returns nothing is not cheap)."""
        if not result.ok:
            return result
        if not result.text.strip():
            failure = Failure(failure_class=FailureClass.EMPTY_OUTPUT, message="empty answer", signature="empty")
            return result.model_copy(update={"failure": failure})
        if job.type == "review":
            problem = gates.verdict_problem(result.text)
            if problem is not None:
                failure = Failure(
                    failure_class=FailureClass.EMPTY_OUTPUT,
                    message=f"unusable review: {problem}",
                    signature="review:unparseable",
                )
                return result.model_copy(update={"failure": failure})
        return result

    def _record_attempt(self, run: _Run, config: BackendConfig, result: BackendResult, started: float) -> None:
        failure = result.failure
        secrets = [key.get_secret_value()] if (key := config.api_key()) else []
        run.attempts.append(
            NewAttempt(
                backend=config.name,
                model=result.model or config.model,
                family=config.family,
                purpose="review" if run.job.type == "review" else "make",
                started_at=started,
                finished_at=self._clock.now(),
                outcome="success" if failure is None else failure.failure_class.value,
                http_status=failure.http_status if failure else None,
                retry_after_s=(failure.resume_at - self._clock.now()) if failure and failure.resume_at else None,
                tokens_in=result.usage.input_tokens,
                tokens_out=result.usage.output_tokens,
                cache_read=result.usage.cache_read_tokens,
                cache_write=result.usage.cache_write_tokens,
                cost_usd=result.cost_usd,
                latency_ms=result.latency_ms,
                error=redact(failure.message, secrets)[:1000] if failure else None,
            )
        )
        self._capacity.add_tokens(result.usage.input_tokens + result.usage.output_tokens)
        if failure is not None:
            run.last_failure = failure

    def _progress_sink(self, run: _Run) -> Callable[[str], Awaitable[None]]:
        async def sink(line: str) -> None:
            run.progress = line[:300]

        return sink

    async def _heartbeat(self, run: _Run, worker: asyncio.Task[None] | None) -> None:
        engine = self._settings.engine
        while True:
            await self._clock.sleep(engine.heartbeat_s)
            if not await self._store.heartbeat(run.job.id, self._owner, engine.lease_s, run.progress):
                run.lease_lost = True
                if worker is not None:
                    worker.cancel()
                return

    async def _act_on_failure(self, run: _Run, config: BackendConfig, failure: Failure) -> str:
        """Apply the failure class's action to the backend. Returns 'next' (fall through) or 'stop'."""
        await self._health.after_failure(config.name, failure)
        cls = failure.failure_class
        return "next" if cls in _FALL_THROUGH else "stop"

    def _narrow(self, remaining: list[BackendConfig], failed: BackendConfig, failure: Failure) -> list[BackendConfig]:
        cls = failure.failure_class
        if cls is FailureClass.CONTEXT_OVERFLOW:
            return [c for c in remaining if c.context_window > failed.context_window]
        if cls is FailureClass.CONTENT_REFUSED:
            return [c for c in remaining if c.family != failed.family]
        return remaining

    async def _on_success(self, run: _Run, config: BackendConfig, result: BackendResult) -> Completion:
        await self._health.after_success(config.name)
        if run.job.type == "review":
            return await gates.complete_review(self._settings, self._store, run.job, run.attempts, result, self._owner)
        if run.job.type == "chat":
            return gates.complete_chat(self._settings, run.job, run.attempts, result, self._owner)
        question = self._workspace.take_question(run.job.id) if run.has_workspace else None
        if question is not None:  # the worker asked the operator: wait in needs_input, same session on resume
            return self._ask_operator(run, config, result, question)
        return await gates.complete_maker(
            self._settings, self._workspace, run.job, run.attempts, config, result, self._owner, self._clock.now()
        )

    def _ask_operator(self, run: _Run, config: BackendConfig, result: BackendResult, question: str) -> Completion:
        job = run.job
        fields = {
            "session_id": result.session_id or job.session_id,
            "maker_backend": config.name,
            "maker_family": config.family,
            "progress": f"{QUESTION_PREFIX}{question[:2000]}",
        }
        return Completion(
            job_id=job.id,
            owner=self._owner,
            to_state=JobState.NEEDS_INPUT,
            reason=f"{config.name}: the worker asked the operator a question",
            attempts=run.attempts,
            fields=fields,
            outbox=[notices.question(job, question)],
        )

    async def _on_exhausted(self, run: _Run, plan: RoutePlan) -> Completion:
        """No backend produced a result in this run: snooze, retry later, or fail."""
        job = run.job
        now = self._clock.now()
        failure = run.last_failure
        states = await self._store.backend_states()
        chain = self._settings.chain_for(job.type)
        paused = [states[n].paused_until for n in chain if n in states and (states[n].paused_until or 0) > now]
        usable = [n for n in chain if not (n in states and states[n].disabled)]
        all_paused = bool(paused) and len(paused) >= len([n for n in chain if not (n in states and states[n].disabled)])
        fields = {
            "last_failure_class": failure.failure_class.value if failure else None,
            "last_error": failure.message[:1000] if failure else None,
            "progress": None,
        }
        base = Completion(job_id=job.id, owner=self._owner, to_state=JobState.SNOOZED, reason="", attempts=run.attempts)
        if failure is None and plan.blocked_by_budget:
            return await self._park_for_budget(run, base, fields, paused)
        if failure is None or all_paused or (failure.failure_class in PAUSING and paused):
            return await self._snooze(run, base, fields, min(paused) if paused else None)
        if failure.failure_class is FailureClass.BUDGET_EXCEEDED:  # more attempts cannot help: the operator decides
            return base.model_copy(
                update={
                    "to_state": JobState.NEEDS_HUMAN,
                    "reason": f"budget exceeded: {failure.message}",
                    "fields": fields,
                    "outbox": [notices.needs_human(job, failure.message, None, why="It ran out of budget.")],
                }
            )
        if failure.failure_class is FailureClass.BAD_REQUEST or not usable:
            return self._fail(run, base, fields, failure)
        if failure.failure_class is FailureClass.CONTENT_REFUSED:
            return base.model_copy(
                update={
                    "to_state": JobState.NEEDS_HUMAN,
                    "reason": "every family refused",
                    "fields": fields,
                    "outbox": [notices.needs_human(job, failure.message, None)],
                }
            )
        if job.attempt + 1 >= job.max_attempts:
            return self._fail(run, base, fields, failure)
        delay = RETRY_BASE_S * (2**job.attempt) * (0.75 + random.random() / 2)
        fields |= {"attempt": job.attempt + 1, "run_after": now + delay}
        return base.model_copy(
            update={
                "to_state": JobState.RETRY_WAIT,
                "fields": fields,
                "reason": f"{failure.failure_class.value} on every backend tried; retry in {delay:.0f}s",
            }
        )

    async def _snooze(self, run: _Run, base: Completion, fields: dict[str, object], until: float | None) -> Completion:
        job = run.job
        now = self._clock.now()
        wake = until if until is not None and until > now else now + SNOOZE_BUSY_S
        fields |= {"run_after": wake}
        outbox: list[NewOutbox] = []
        if job.type == "review":
            outbox.append(
                notices.info(
                    f"job:{job.parent_id}:review_waits",
                    f"Job #{job.parent_id} waits for a reviewer of another model "
                    f"family than {job.maker_family}; none is available now.",
                    chat_id=job.chat_id,
                    job_id=job.parent_id,
                )
            )
        return base.model_copy(
            update={
                "fields": fields,
                "outbox": outbox,
                "reason": f"no backend available; snoozed until {hm(wake)} (no attempt used)",
            }
        )

    async def _park_for_budget(
        self, run: _Run, base: Completion, fields: dict[str, object], paused: list[float | None]
    ) -> Completion:
        """The daily USD cap left no backend: wait (no attempt used) until the budget resets at UTC midnight,
        or a paused backend of the chain comes back; tell the operator once a day."""
        now = self._clock.now()
        midnight = now - now % 86_400 + 86_400  # _spent_today counts from UTC midnight
        parked = await self._snooze(run, base, fields, min([p for p in paused if p is not None] + [midnight]))
        cap, spent = self._settings.engine.daily_budget_usd, await self._spent_today()
        alert = notices.alert(
            f"budget:{int(now // 86_400)}",
            f"Daily budget reached: ${spent:.2f} of ${cap:.2f} spent on pay-per-token backends today. Jobs that "
            f"need them wait until {hm(midnight)}; raise engine.daily_budget_usd to go on sooner.",
            urgent=False,
        )
        wake = parked.fields.get("run_after")
        return parked.model_copy(
            update={
                "outbox": [*parked.outbox, alert],
                "reason": f"daily budget reached; parked until {hm(float(wake or midnight))} (no attempt used)",
            }
        )

    def _fail(self, run: _Run, base: Completion, fields: dict[str, object], failure: Failure) -> Completion:
        job = run.job
        # A failed review is reported through its job, which the store hands to the operator (needs_human).
        outbox = (
            []
            if job.type == "review"
            else [notices.job_failed(job, failure.failure_class.value, failure.message, run.tried)]
        )
        fields |= {"attempt": job.attempt + 1}
        return base.model_copy(
            update={
                "to_state": JobState.FAILED,
                "fields": fields,
                "outbox": outbox,
                "reason": f"failed: {failure.failure_class.value}",
            }
        )

    async def _spent_today(self) -> float:
        paying = [b.name for b in self._settings.backends if b.pay_per_token]
        if not paying:
            return 0.0
        now = self._clock.now()
        midnight = now - (now % 86_400)
        return await self._store.spend_since(midnight, paying)

    def _job_budget_spent(self, run: _Run) -> bool:
        """The job type's own budget (``budget_usd``), counted over every run of the job, checked before each call."""
        budget = self._settings.job_type(run.job.type).budget_usd
        if budget is None:
            return False
        spent = run.job.cost_usd + sum(a.cost_usd for a in run.attempts)
        if spent < budget:
            return False
        run.last_failure = Failure(
            failure_class=FailureClass.BUDGET_EXCEEDED,
            message=f"job budget reached: ${spent:.4f} of ${budget:.2f}",
            signature="job_budget",
        )
        return True

    async def _budget_block(self, config: BackendConfig) -> str | None:
        """'spent' when today's cap is reached; 'in_flight' when calls still running (at their estimated price)
        could reach it, so jobs routed at the same moment cannot all spend past the cap; None to go ahead."""
        if not config.pay_per_token:
            return None
        spent, cap = await self._spent_today(), self._settings.engine.daily_budget_usd
        if spent >= cap:
            return "spent"
        return "in_flight" if spent + self._router.in_flight_usd >= cap else None


def _estimated_cost(config: BackendConfig, request: BackendRequest) -> float:
    """An upper-end guess of one call's price: the whole prompt in, the output limit out."""
    if not config.pay_per_token:
        return 0.0
    tokens_in = (len(request.system) + len(request.prompt)) / CHARS_PER_TOKEN
    return (tokens_in * config.price_in_per_mtok + request.max_output_tokens * config.price_out_per_mtok) / 1e6


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n\n" if body.strip() else ""
