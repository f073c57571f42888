"""Running one claimed job: build the request, call backends down the route plan, apply the policy's decision.

What to do after each outcome (fall through, snooze, park for budget, retry later, fail, ask the operator) is
chosen by ``engine.policy``; this module gathers the facts for it and turns its decisions into a ``Completion``.
The runner never writes a job's state itself: it hands the completion to the engine, which applies it fenced on
the lease (grouped with others into one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import prompts
from engine import gates, notices
from engine.backends.base import BackendRequest, BackendResult, Usage
from engine.capacity import Capacity
from engine.chat_session import ChatSessions, resume_failed
from engine.clock import Clock
from engine.errors import WorkspaceError
from engine.failures import Failure, FailureClass
from engine.health import BackendHealth
from engine.models import BackendState, Job, JobState, Project
from engine.persona_actions import PersonaActions, complete_chat
from engine.policy import (
    DAY_S,
    BudgetBlock,
    BudgetFacts,
    RunDecision,
    RunKind,
    RunOutcome,
    Step,
    after_attempt,
    after_chain,
    budget_block,
    budget_resets_at,
    day_start,
    hm,
    job_budget_failure,
    no_other_family,
    route_with_windows,
    without_reviewer,
)
from engine.redaction import redact
from engine.routing import CHARS_PER_TOKEN, FILE_CAPABLE_KINDS, RoutePlan, Router, SkipReason
from engine.sandbox import Sandbox
from engine.settings import BackendConfig, Settings
from engine.snapshot import build_snapshot
from engine.store import Completion, LeaseLost, NewAttempt, NewOutbox, Store
from engine.store.stats import saved_key
from engine.vocab import QUESTION_PREFIX
from engine.windows import WindowTracker
from engine.workspace import Workspace
from engine.worktrees import Place, ProjectWork, WorkEvidence

log = logging.getLogger(__name__)

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
    # What memory contributes, asked once per run: every search bumps the access counts of what it finds.
    context: JobContext = field(default_factory=JobContext)
    attempts: list[NewAttempt] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    last_failure: Failure | None = None
    states: dict[str, BackendState] = field(default_factory=dict)  # as refreshed after this run's failures
    cap_reached: bool = False  # a pay-per-token backend was passed over: today's USD cap is spent
    progress: str | None = None
    has_workspace: bool = False  # a worker with files ran: look for its question.md
    lease_lost: bool = False
    project: Project | None = None  # the job's project, when it works on a folder of the operator's
    place: Place | None = None  # where it works there: its worktree, or the folder itself

    def outcome(self) -> RunOutcome:
        return RunOutcome(self.last_failure, self.states, self.cap_reached)


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
        work: ProjectWork | None = None,
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
        self._windows = WindowTracker(settings, store, clock)
        self._chats = ChatSessions(settings, store, clock)  # the persona's CLI session per chat
        # The test runs' sandbox is looked for once, at the first test run.
        self._work = work or ProjectWork(workspace, lambda: Sandbox.for_settings(settings))
        # What the persona's actions go through (``Control``); the engine sets it (the composition root may
        # replace it with one that also reaches memory).
        self.persona_actions: PersonaActions | None = None

    async def run(self, job: Job) -> None:
        run = _Run(job)
        try:
            completion = await self._route_and_call(run)
        except LeaseLost:
            log.info("job %s: lease lost, stopping", job.id)
            return
        if completion is None:
            return
        _with_place(completion, run)
        completion.snapshot = job  # as claimed: the store fences on it instead of reading the job again
        finished = await self._submit(completion)
        if finished is not None and finished.state in (JobState.DONE, JobState.FAILED, JobState.NEEDS_HUMAN):
            await self._hooks.job_finished(finished)

    async def _route_and_call(self, run: _Run) -> Completion | None:
        """Build the request, call the plan's backends in order until one succeeds or the policy says stop,
        then apply the policy's decision for the run."""
        job = run.job
        run.context = await self._hooks.context_for(job)
        request = await self._build_request(job, run.context)
        try:
            run.place = await self._place(run)
        except WorkspaceError as exc:
            return self._workspace_lost(run, str(exc))
        plan = await self._plan(job, request)
        if plan.none_can_act_on_files():
            run.last_failure = Failure(failure_class=FailureClass.BAD_REQUEST, signature="routing:needs_workspace",
                                       message=f"no backend of the {job.type} chain can act on files ("
                                               + "; ".join(f"{n}: {s.text}" for n, s in plan.skipped.items()) + ")")
        remaining = [] if run.last_failure else list(plan.candidates)
        while remaining:
            config = remaining.pop(0)
            if self._job_budget_spent(run):
                break
            if await self._budget_blocked(run, config):  # before each call: a fallback may not overspend either
                continue
            result = await self._call(run, config, request)
            if result.ok:
                return await self._on_success(run, config, result)
            failure = result.failure
            assert failure is not None
            run.states = await self._health.after_failure(config.name, failure)
            then = after_attempt(failure, config, remaining)
            if then.step is Step.STOP:
                break
            remaining = then.remaining
        decision = self._without_reviewer(run, plan) or after_chain(
            run.outcome(), plan, job, self._clock.now(), jitter=random.random()
        )
        return await self._apply(run, decision)

    def _without_reviewer(self, run: _Run, plan: RoutePlan) -> RunDecision | None:
        """A review no backend of another family can take: what ``[gate] when_no_other_family`` says."""
        job, gate = run.job, self._settings.gate
        if job.type != "review" or run.last_failure is not None or not no_other_family(plan):
            return None
        decision = without_reviewer(gate.when_no_other_family, job, job.maker_family or "?", self._clock.now(),
                                    gate.no_other_family_grace_s)
        if decision is not None and decision.kind is RunKind.FAIL:  # the review is given up, not failed by a backend
            run.last_failure = Failure(failure_class=FailureClass.CANCELLED, message=decision.reason,
                                       signature="gate:no_other_family")
        return decision

    async def _plan(self, job: Job, request: BackendRequest) -> RoutePlan:
        """Route on the backend states the engine refreshed at this dispatch (and after every failure); a backend
        passed over for its state (paused, disabled, budget) is an event of the job, a routine skip is not."""
        type_config = self._settings.job_type(job.type)
        plan = self._router.plan(
            job.type,
            self._router.states,
            prompt_chars=len(request.system) + len(request.prompt),
            exclude_family=job.maker_family if job.type == "review" else None,
            spent_today_usd=await self._spent_today(),
            avoid_backend=job.avoid_backend,
            needs_files=type_config.needs_workspace and not type_config.accept_patch,
        )
        plan = await self._route_windows(job, plan)
        if job.type == "review" and self._settings.gate.when_no_other_family == "same_family_other_model":
            plan = await self._same_family_reviewers(job, request, plan)
        skipped = plan.noteworthy_skips()
        if skipped:
            reason = "skipped " + "; ".join(f"{n}: {r}" for n, r in skipped.items())
            await self._store.add_event(job.id, "routing", reason, {"skipped": skipped})
        return plan

    async def _route_windows(self, job: Job, plan: RoutePlan) -> RoutePlan:
        """Quota-aware routing: spare the subscription windows that are short (the rules are the policy's)."""
        if not self._settings.quota.enabled:
            return plan
        windows = await self._windows.by_backend([c.name for c in plan.candidates])
        if not windows:
            return plan
        size = await self._store.typical_run(job.type)
        plan = route_with_windows(plan, windows, job, size, self._settings.quota, self._clock.now(),
                                  self._router.running)
        window_skips = (SkipReason.WINDOW_KEPT, SkipReason.WINDOW_TOO_SHORT)
        moved = [n for n, s in plan.skipped.items() if s.reason in window_skips and n not in plan.window_waits]
        if moved or plan.window_waits:
            await self._windows.after_routing(plan, moved)
        return plan
    async def _same_family_reviewers(self, job: Job, request: BackendRequest, plan: RoutePlan) -> RoutePlan:
        """With no reviewer of another family, another model of the maker's own family may review (the
        operator's choice in ``[gate]``); never the maker's backend or model itself."""
        if not no_other_family(plan):
            return plan
        parent = await self._store.get_job(job.parent_id or 0)
        maker = parent.maker_backend if parent is not None else None
        maker_model = next((b.model for b in self._settings.backends if b.name == maker), None)
        same = self._router.plan(job.type, self._router.states, prompt_chars=len(request.system) + len(request.prompt),
                                 spent_today_usd=await self._spent_today(), avoid_backend=maker)
        same.candidates = [c for c in same.candidates if c.model != maker_model]
        return same if same.candidates else plan

    async def _build_request(self, job: Job, context: JobContext) -> BackendRequest:
        type_config = self._settings.job_type(job.type)
        if job.type == "chat":
            system = prompts.persona_system(self._settings.persona_name, self._settings.job_types, context.core)
            history = await self._store.recent_messages(job.chat_id or 0, limit=12)
            convo = "\n".join(f"{m.role.capitalize()}: {m.text}" for m in history if m.job_id != job.id)
            convo = prompts.untrusted("recent conversation", convo) if convo.strip() else ""
            state = await build_snapshot(self._store, self._settings, self._clock.now())
            snapshot = prompts.untrusted("live snapshot", state)
            prompt = _section("Relevant memories", context.memories) + _section("Live snapshot", snapshot)
            prompt += f"{_section('Recent conversation', convo)}Operator: {job.prompt}"
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
        needs_files = self._settings.job_type(job.type).require_test_evidence or run.place is not None
        warm = self._chats.applies(job, config)
        if warm:  # a chat turn on the claude CLI: in the chat's folder, resuming its session
            request, warm = await self._chats.prepare(job, config, request)
        elif config.kind in ("claude_cli", "codex_cli") or needs_files:
            place = run.place
            path = self._workspace.prepare(
                job,
                memories=run.context.memories,
                core=run.context.core,
                instructions=prompts.job_instructions(job.type),
                work_dir=place.work_dir if place else None,
            )
            work = place.work_dir if place else self._workspace.workspace_for(job)
            # A worktree job works in its worktree (its cwd) and reads the repository's git folder; a folder of
            # the operator's that is not a repository is bound as it is.
            request = request.model_copy(
                update={"workspace": path, "timeout_s": min(request.timeout_s, config.timeout_s),
                        "work_dir": work if work != path else None,
                        "read_dirs": [place.git_dir] if place and place.git_dir else [],
                        "cwd_in_work_dir": bool(place and place.is_worktree)}
            )
            run.has_workspace = True
        request = await self._with_session_usage(request)
        if run.place is not None and run.place.is_worktree and config.kind not in FILE_CAPABLE_KINDS:
            # accept_patch: a backend that cannot act on files answers with a diff the engine applies
            patch_how = await self._work.patch_instructions(run.place)
            request = request.model_copy(update={"prompt": f"{request.prompt}\n\n{patch_how}"})
        backend = self._router.backend(config.name)
        self._router.running[config.name] += 1
        reserved = _estimated_cost(config, request)
        self._router.in_flight_usd += reserved
        started = self._clock.now()
        # The call runs in this task; the heartbeat cancels this task if the lease is lost (swept, cancelled).
        # Cancelling this task (shutdown, sweep) cancels the backend call with it, killing a CLI worker.
        try:
            async with self._kept_alive(run):
                result = await backend.run(request, self._progress_sink(run))
                if warm and resume_failed(request, result):  # the CLI lost the chat's session: once more, fresh
                    request = await self._chats.forget(job, request)
                    result = await backend.run(request, self._progress_sink(run))
            if warm:
                await self._chats.keep(job, config, request, result)
        finally:
            self._router.running[config.name] -= 1
            self._router.in_flight_usd -= reserved
            if warm:
                self._chats.release(job)
        await self._keep_session_usage(result)
        if config.subscription and result.list_price_usd > 0:
            await self._store.kv_add(saved_key(self._clock.now()), result.list_price_usd)
        result = self._validate_output(job, result)
        run.tried.append(config.name)
        self._record_attempt(run, config, result, started)
        await self._windows.after_call(config, result)
        return result

    async def _with_session_usage(self, request: BackendRequest) -> BackendRequest:
        """A resumed session's running token total as its last run reported it (codex reports running totals;
        the backend subtracts this to get the run's own usage)."""
        if not request.session_id:
            return request
        total = await self._store.kv_get(f"session_usage:{request.session_id}")
        return request.model_copy(update={"session_usage": Usage.model_validate_json(total) if total else None})

    async def _keep_session_usage(self, result: BackendResult) -> None:
        if result.session_id and result.session_total is not None:
            await self._store.kv_set_if_changed(f"session_usage:{result.session_id}",
                                                result.session_total.model_dump_json())

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

    @contextlib.asynccontextmanager
    async def _kept_alive(self, run: _Run) -> AsyncIterator[None]:
        """The job's lease renewed while the body runs (a backend call, the engine's test run); a lost lease
        cancels the body and surfaces as ``LeaseLost``."""
        heartbeat = asyncio.create_task(self._heartbeat(run, asyncio.current_task()))
        try:
            yield
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if run.lease_lost and task is not None and task.uncancel() == 0:
                raise LeaseLost(f"job {run.job.id}") from None
            raise
        finally:
            heartbeat.cancel()

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

    async def _on_success(self, run: _Run, config: BackendConfig, result: BackendResult) -> Completion:
        await self._health.after_success(config.name, started_at=run.attempts[-1].started_at)
        if run.job.type == "review":
            return await gates.complete_review(self._settings, self._store, run.job, run.attempts, result, self._owner)
        if run.job.type == "chat":
            assert self.persona_actions is not None, "the engine sets persona_actions before it runs a chat job"
            return await complete_chat(
                self._settings, run.job, run.attempts, result, self._owner, self.persona_actions
            )
        question = self._workspace.take_question(run.job.id) if run.has_workspace else None
        if question is not None:  # the worker asked the operator: wait in needs_input, same session on resume
            return self._ask_operator(run, config, result, question)
        try:
            async with self._kept_alive(run):
                work = await self._finish_work(run, config, result)
        except WorkspaceError as exc:
            return self._workspace_lost(run, str(exc))
        return await gates.complete_maker(
            self._settings, self._workspace, run.job, run.attempts, config, result, self._owner, self._clock.now(),
            work=work,
        )

    # --- Work on a project's folder ------------------------------------------------------------------------

    async def _place(self, run: _Run) -> Place | None:
        """Where a job of a project bound to a folder of the operator's works (None for every other job)."""
        job = run.job
        if not job.project or job.type in ("chat", "review"):
            return None
        run.project = await self._store.get_project(job.project)
        if run.project is None or not run.project.path:
            return None
        return await self._work.place(job, run.project)

    async def _finish_work(self, run: _Run, config: BackendConfig, result: BackendResult) -> WorkEvidence | None:
        if run.place is None or run.project is None:
            return None
        if run.project.test_command:
            run.progress = f"running the project's tests: {run.project.test_command}"[:300]
        patch_from = result.text if config.kind not in FILE_CAPABLE_KINDS else None
        return await self._work.finish(run.job, run.place, run.project, patch_from=patch_from,
                                       test_timeout_s=self._settings.engine.test_timeout_s, store=self._store)

    def _workspace_lost(self, run: _Run, problem: str) -> Completion:
        """The project's folder is gone or git refused: the operator decides; the job's own folder is kept."""
        job = run.job
        why = f"Its workspace cannot be used: {problem}."
        return Completion(job_id=job.id, owner=self._owner, to_state=JobState.NEEDS_HUMAN,
                          reason=f"workspace: {problem}"[:500], attempts=run.attempts,
                          fields={"progress": None, "last_error": problem[:1000]},
                          outbox=[notices.needs_human(job, problem, None, why=why)])

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

    async def _apply(self, run: _Run, decision: RunDecision) -> Completion:
        """Turn the policy's end-of-run decision into the job's completion: its state, fields and notices."""
        job, failure, kind = run.job, run.last_failure, decision.kind
        fields: dict[str, object] = {
            "last_failure_class": failure.failure_class.value if failure else None,
            "last_error": failure.message[:1000] if failure else None,
            "progress": None,
        }
        base = Completion(
            job_id=job.id, owner=self._owner, to_state=JobState.SNOOZED, reason=decision.reason, attempts=run.attempts
        )
        if kind is RunKind.SNOOZE or kind is RunKind.PARK_FOR_BUDGET:
            outbox = [] if decision.quiet else self._waiting_notices(job)
            if kind is RunKind.PARK_FOR_BUDGET:
                outbox.append(await self._budget_alert())
            return base.model_copy(update={"fields": fields | {"run_after": decision.at}, "outbox": outbox})
        assert failure is not None  # the policy retries, fails or asks the operator only after a failure
        if kind is RunKind.NEEDS_HUMAN:
            notice = notices.needs_human(job, failure.message, None, why=decision.why)
            return base.model_copy(update={"to_state": JobState.NEEDS_HUMAN, "fields": fields, "outbox": [notice]})
        fields |= {"attempt": job.attempt + 1}
        if kind is RunKind.RETRY_LATER:
            return base.model_copy(
                update={"to_state": JobState.RETRY_WAIT, "fields": fields | {"run_after": decision.at}}
            )
        # A failed review is reported through its job, which the store hands to the operator (needs_human).
        outbox = (
            []
            if job.type == "review"
            else [notices.job_failed(job, failure.failure_class.value, failure.message, run.tried)]
        )
        return base.model_copy(update={"to_state": JobState.FAILED, "fields": fields, "outbox": outbox})

    def _waiting_notices(self, job: Job) -> list[NewOutbox]:
        """A review that waits tells its maker's job why (a reviewer of another family is needed)."""
        if job.type != "review":
            return []
        return [
            notices.info(
                f"job:{job.parent_id}:review_waits",
                f"Job #{job.parent_id} waits for a reviewer of another model "
                f"family than {job.maker_family}; none is available now.",
                chat_id=job.chat_id,
                job_id=job.parent_id,
            )
        ]

    async def _budget_alert(self) -> NewOutbox:
        """Parked for the daily USD cap: tell the operator once a day when the budget resets."""
        now = self._clock.now()
        midnight = budget_resets_at(now)
        cap, spent = self._settings.engine.daily_budget_usd, await self._spent_today()
        return notices.alert(
            f"budget:{int(now // DAY_S)}",
            f"Daily budget reached: ${spent:.2f} of ${cap:.2f} spent on pay-per-token backends today. Jobs that "
            f"need them wait until {hm(midnight)}; raise engine.daily_budget_usd to go on sooner.",
            urgent=False,
        )

    async def _spent_today(self) -> float:
        paying = [b.name for b in self._settings.backends if b.pay_per_token]
        if not paying:
            return 0.0
        return await self._store.spend_since(day_start(self._clock.now()), paying)

    def _job_budget_spent(self, run: _Run) -> bool:
        """The job type's own budget, checked before each call; reached, it is the run's last failure."""
        spent = run.job.cost_usd + sum(a.cost_usd for a in run.attempts)
        over = job_budget_failure(self._settings.job_type(run.job.type).budget_usd, spent)
        if over is not None:
            run.last_failure = over
        return over is not None

    async def _budget_blocked(self, run: _Run, config: BackendConfig) -> bool:
        """Today's USD cap forbids calling ``config`` now (a backend that is not pay-per-token costs no read)."""
        if not config.pay_per_token:
            return False
        facts = BudgetFacts(
            await self._spent_today(), self._settings.engine.daily_budget_usd, self._router.in_flight_usd
        )
        block = budget_block(config, facts)
        run.cap_reached |= block is BudgetBlock.SPENT  # IN_FLIGHT: calls still running may use it up: wait briefly
        return block is not None


def _estimated_cost(config: BackendConfig, request: BackendRequest) -> float:
    """An upper-end guess of one call's price: the whole prompt in, the output limit out."""
    if not config.pay_per_token:
        return 0.0
    tokens_in = (len(request.system) + len(request.prompt)) / CHARS_PER_TOKEN
    return (tokens_in * config.price_in_per_mtok + request.max_output_tokens * config.price_out_per_mtok) / 1e6


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n\n" if body.strip() else ""


def _with_place(completion: Completion, run: _Run) -> None:
    """Every end of a run that made a worktree records it (a retry or a revision reuses it), and the operator
    learns once what the worktree does not hold (uncommitted changes, a detached HEAD)."""
    place = run.place
    if place is None or not place.is_worktree:
        return
    completion.fields = {"workspace": str(place.work_dir), "branch": place.branch, "base_commit": place.base,
                         "worktree_pruned_at": None, **completion.fields}
    if place.note:
        completion.outbox = [*completion.outbox, notices.info(
            f"job:{run.job.id}:worktree", f"ℹ️ Job #{run.job.id} works on branch {place.branch}: {place.note}.",
            chat_id=run.job.chat_id, job_id=run.job.id)]
