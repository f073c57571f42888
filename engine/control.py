"""The operator's verbs over the engine: what the CLI, the console and Telegram call.

Works with or without a running engine in this process: without one (the CLI), writes land in the
database and the running engine notices them through ``PRAGMA data_version``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import quota, schedule_times
from engine.clock import Clock
from engine.errors import NotFound, WorkspaceError
from engine.job_factory import MAX_PROMPT_CHARS, new_job
from engine.models import Job, JobState, Priority, Project, Schedule, Source
from engine.quota import QuotaWindow
from engine.settings import Settings
from engine.store import NewOutbox, Store
from engine.text import clean_name, clean_text
from engine.vocab import ALIVE_KEY, QUESTION_PREFIX, STOPPED_MARK
from engine.workspace import Workspace

if TYPE_CHECKING:  # the CLI's Control has no engine: the loop, the runner and the backends stay unloaded
    from engine.gitrepo import MergeOutcome
    from engine.loop import Engine
    from engine.worktrees import ProjectWork

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# "<epoch seconds> <what is wrong>" written by the operator's channel (Telegram unreachable); "" once it is up.
CHANNEL_PROBLEM_KEY = "channel:problem"
MAX_JOB_ID = 2**63 - 1  # SQLite's largest integer: a larger id cannot even be looked up


def parse_duration(text: str) -> float:
    """'7d' -> seconds. Clear error on anything else."""
    value, unit = text[:-1], text[-1:].lower()
    if unit not in DURATION_UNITS or not value.replace(".", "", 1).isdigit():
        raise ValueError(f"not a duration: {text!r} (examples: 30m, 12h, 7d)")
    return schedule_times.check_duration(float(value) * DURATION_UNITS[unit], text)


def parse_job_id(text: str) -> int:
    """'12' or '#12' -> 12. A clear ValueError for anything else, however long."""
    token = text.strip().removeprefix("#")
    if not token.isdigit() or not token.isascii():
        raise ValueError(f"not a job id: {_shown(text)!r} (a number, e.g. 12)")
    if len(token) > len(str(MAX_JOB_ID)):  # before int(): Python refuses to convert over 4,300 digits
        raise NotFound(f"no job #{_shown(token)} (job ids go up to {MAX_JOB_ID})")
    return int(token)


def check_job_id(job_id: int) -> int:
    if not 1 <= job_id <= MAX_JOB_ID:
        raise NotFound(f"no job #{_shown(str(job_id))} (job ids go from 1 to {MAX_JOB_ID})")
    return job_id


def _shown(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:20]}…"


class Control:
    def __init__(self, settings: Settings, store: Store, clock: Clock, engine: Engine | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.engine = engine
        self.strangers = 0

    async def add_job(
        self,
        text: str,
        *,
        type: str,
        project: str | None = None,
        priority: Priority = Priority.NORMAL,
        source: Source = Source.OPERATOR,
        chat_id: int | None = None,
        idempotency_key: str | None = None,
        title: str = "",
        run_after: float | None = None,
    ) -> tuple[Job, bool]:
        job = new_job(
            self.settings,
            type=type,
            prompt=clean_text(text),
            title=clean_name(title),
            project=project,
            priority=priority,
            source=source,
            chat_id=chat_id,
            idempotency_key=idempotency_key,
            run_after=run_after,
        )
        if self.engine is not None:
            return await self.engine.submit(job)
        return await self.store.enqueue(job)

    async def release(self, job_id: int) -> Job:
        """A queued job held back (``run_after`` in the future) may run now."""
        released = await self.store.release(check_job_id(job_id))
        self._wake()
        return released

    async def chat(self, chat_id: int, text: str, *, update_id: int | None = None) -> Job | None:
        """The operator said something: record it and queue the persona's turn (operator lane), atomically.
        None when this update was already handled (a redelivery)."""
        text = clean_text(text)
        job = new_job(
            self.settings, type="chat", prompt=text, priority=Priority.OPERATOR, source=Source.CHAT, chat_id=chat_id
        )
        created = await self.store.accept_operator_message(update_id, chat_id, text, job)
        self._wake()
        return created

    async def claim_update(self, update_id: int) -> bool:
        """A channel records an update id before handling it. False when it was already handled (a redelivery)."""
        return await self.store.inbox_claim(update_id)

    async def reply(
        self, dedupe_key: str, chat_id: int | None, text: str, payload: dict[str, object] | None = None
    ) -> bool:
        """A channel's answer to a command or a button, through the outbox (durable, ordered, sent once).
        False when this answer was already queued (``dedupe_key`` seen)."""
        message = NewOutbox(dedupe_key=dedupe_key, kind="command", text=text, chat_id=chat_id, payload=payload or {})
        return await self.store.add_outbox(message)

    async def job(self, job_id: int) -> Job:
        """The job, or NotFound. Every verb on a job id (cancel, retry, approve, answer, ...) comes here first."""
        job = await self.store.get_job(check_job_id(job_id))
        if job is None:
            raise NotFound(f"no job #{job_id}")
        return job

    async def cancel(self, job_id: int) -> Job:
        job = await self.job(job_id)
        if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
            raise ValueError(f"job #{job_id} is already {job.state.value}")
        cancelled = await self.store.cancel(job_id)
        if self.engine is not None:  # running here: stop its worker now rather than at the next heartbeat
            self.engine.stop_job(job_id)
        return cancelled

    async def retry(self, job_id: int) -> Job:
        await self._retryable(job_id)
        retried = await self.store.retry(job_id)
        self._wake()
        return retried

    async def reroute(self, job_id: int) -> Job:
        """Retry on another backend: the next run skips the backend that made (or last tried) the job."""
        job = await self._retryable(job_id)
        attempts = [a for a in await self.store.job_attempts(job_id) if a.purpose == "make"]
        avoid = job.maker_backend or (attempts[-1].backend if attempts else None)
        rerouted = await self.store.retry(job_id, "retried by operator on another backend", avoid_backend=avoid)
        self._wake()
        return rerouted

    async def _retryable(self, job_id: int) -> Job:
        job = await self.job(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED, JobState.NEEDS_HUMAN):
            raise ValueError(
                f"job #{job_id} is {job.state.value}; only failed, cancelled or waiting jobs can be retried"
            )
        return job

    async def approve(self, job_id: int) -> Job:
        """The operator's explicit approval: the only override of the quality gate. Works on a job waiting for
        the operator's decision and on one still waiting for a reviewer (whose pending review is then cancelled)."""
        job = await self.job(job_id)
        if job.state not in (JobState.NEEDS_HUMAN, JobState.REVIEWING):
            raise ValueError(f"job #{job_id} is {job.state.value}; only jobs waiting for your decision or for a "
                             "reviewer can be approved")
        approved = await self.store.transition(
            job_id, JobState.DONE, "approved by the operator", fields={"operator_approved": True},
            expected=[job.state],
        )
        open_states = [JobState.QUEUED, JobState.SNOOZED, JobState.RETRY_WAIT, JobState.RUNNING]
        for review in await self.store.list_jobs(states=open_states, parent_id=job_id):
            if review.type == "review":
                await self.cancel(review.id)
        return approved

    async def revise_again(self, job_id: int) -> Job:
        job = await self.job(job_id)
        if job.state != JobState.NEEDS_HUMAN:
            raise ValueError(f"job #{job_id} is {job.state.value}")
        await self.store.transition(job_id, JobState.REVISING, "operator asked for another revision")
        revised = await self.store.transition(
            job_id,
            JobState.QUEUED,
            "revision queued",
            fields={
                "revision": job.revision + 1,
                "max_revisions": job.max_revisions + 1,
                "run_after": self.clock.now(),
            },
        )
        self._wake()
        return revised

    async def status(self) -> dict[str, Any]:
        counts = await self.store.counts_by_state()
        states = await self.store.backend_states()
        running = counts.get("running", 0)
        tokens = await self.store.tokens_since(self.clock.now() - 300)
        backpressure = (await self.store.kv_get("backpressure")) == "on"
        now = self.clock.now()
        windows: dict[str, list[QuotaWindow]] = {}  # by plan: a plan's backends share its windows
        for window in await self.store.quota_windows():
            windows.setdefault(window.plan, []).append(window)
        backends = []
        for config in self.settings.backends:
            state = states.get(config.name)
            plan = quota.plan_of(config.kind, config.family)
            paused = state is not None and (state.paused_until or 0) > now
            backends.append(
                {
                    "name": config.name,
                    "kind": config.kind,
                    "family": config.family,
                    "tier": config.tier,
                    "model": config.model,
                    "simulated": config.simulated,
                    "disabled": bool(state and state.disabled),
                    "paused_until": state.paused_until if state and paused else None,
                    "pause_reason": state.pause_reason if state and (paused or state.disabled) else None,
                    "consecutive_failures": state.consecutive_failures if state else 0,
                    "last_error": state.last_error if state else None,
                    # Subscription usage windows: one line each ("window unknown" when never reported) and the data.
                    "windows": quota.summary(windows.get(plan, []), now) if config.subscription else [],
                    "window_data": [w.model_dump(mode="json") for w in windows.get(plan, [])]
                    if config.subscription else [],
                }
            )
        engine = await self._engine_liveness(now)
        engine["channel_problem"] = await self._channel_problem()
        return {
            "engine": engine,
            "slots": {
                "running": running,
                "max": self.settings.engine.max_slots,
                "reserved_operator": self.settings.engine.reserved_operator_slots,
            },
            "jobs": counts,
            "backpressure": backpressure,
            "tokens_5min": tokens,
            "token_budget_5min": self.settings.engine.token_budget_5min,
            "backends": backends,
            "strangers": self.strangers,
            "simulated": self.settings.simulated_only,
            "now": now,
        }

    async def _channel_problem(self) -> dict[str, Any] | None:
        """What the running engine's channel last said was wrong with it (Telegram unreachable), if anything."""
        since, _, text = (await self.store.kv_get(CHANNEL_PROBLEM_KEY) or "").partition(" ")
        return {"since": float(since), "text": text} if text else None

    async def _engine_liveness(self, now: float) -> dict[str, Any]:
        """Is a `switchboard run` engine alive on this data folder? It renews its mark every sweep interval."""
        parts = (await self.store.kv_get(ALIVE_KEY) or "").split(" ")
        seen_at = float(parts[0]) if parts[0] else None
        stopped = parts[2:] == [STOPPED_MARK]  # a clean stop cleared the mark
        limit_s = 3 * self.settings.engine.sweep_interval_s
        alive = seen_at is not None and now - seen_at <= limit_s and not stopped
        owner = parts[1] if len(parts) > 1 else None
        return {"alive": alive, "last_seen": seen_at, "owner": owner, "stopped": stopped}

    async def pause_backend(self, name: str, hours: float = 24 * 365) -> None:
        self.settings.backend(name)  # KeyError for an unknown name
        await self.store.pause_backend(name, self.clock.now() + hours * 3600, "operator")

    async def resume_backend(self, name: str) -> None:
        self.settings.backend(name)
        await self.store.resume_backend(name)
        self._wake()

    async def answer(self, job_id: int, text: str) -> Job:
        """The operator's answer to a worker's question: appended to the job's task, which goes back to the
        queue; the next run resumes the same session (``session_id`` is kept)."""
        job = await self.job(job_id)
        if job.state != JobState.NEEDS_INPUT:
            raise ValueError(f"job #{job_id} is {job.state.value}; only a job that asked a question takes an answer")
        answer = clean_text(text).strip()
        if not answer:
            raise ValueError("the answer is empty")
        asked = (job.progress or "").removeprefix(QUESTION_PREFIX).strip()
        prompt = f"{job.prompt}\n\n" + (f"You asked the operator:\n{asked}\n\n" if asked else "")
        prompt += f"Operator's answer:\n{answer}"
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the answer is too long for this job (at most {MAX_PROMPT_CHARS} characters in all)")
        answered = await self.store.transition(
            job_id,
            JobState.QUEUED,
            "answered by the operator",
            fields={"prompt": prompt, "progress": None, "run_after": self.clock.now()},
            expected=[JobState.NEEDS_INPUT],
        )
        self._wake()
        return answered

    async def add_schedule(
        self,
        name: str,
        text: str,
        *,
        type: str,
        every: str | None = None,
        daily: str | None = None,
        project: str | None = None,
        catch_up: bool = True,
    ) -> Schedule:
        """A recurring job: ``every`` ('30m') or ``daily`` ('07:00' in ``pulse.timezone``), exactly one."""
        if (every is None) == (daily is None):
            raise ValueError("give exactly one of: every 30m, daily 07:00")
        name, text = clean_name(name), clean_text(text)
        if not name or len(name) > 64:
            raise ValueError("a schedule needs a name of 1 to 64 characters")
        new_job(self.settings, type=type, prompt=text, project=project)  # the same checks a run will face
        interval_s = schedule_times.parse_every(every) if every is not None else None
        daily_at = schedule_times.parse_hhmm(daily).strftime("%H:%M") if daily is not None else None
        tz = schedule_times.zone(self.settings.pulse.timezone)
        next_run_at = schedule_times.next_run_after(self.clock.now(), interval_s=interval_s, daily_at=daily_at, tz=tz)
        return await self.store.add_schedule(
            name,
            type,
            text.strip(),
            next_run_at=next_run_at,
            interval_s=interval_s,
            daily_at=daily_at,
            project=project,
            catch_up=catch_up,
        )

    async def add_project(self, name: str, goal: str = "", *, path: str | None = None,
                          test: str | None = None) -> Project:
        """A project: with ``path``, on a folder of the operator's (a git repository: each job in a worktree of
        its own), else with its own folder under ``$SWITCHBOARD_HOME/projects/``. ``test``: the command the
        engine runs after each job's maker. Every input is checked before anything is created."""
        from engine.worktrees import check_project_name, check_project_path, check_test_command

        name = check_project_name(clean_name(name))
        folder = check_project_path(path, self.settings.home) if path is not None else None
        command = check_test_command(test) if test is not None else None
        own = Workspace(self.settings.home).project_dir(name)
        project = await self.store.add_project(name, clean_text(goal).strip(), workspace=str(own),
                                               path=str(folder) if folder else None, test_command=command)
        if folder is None:
            own.mkdir(parents=True, exist_ok=True)
        return project

    async def project_details(self, project: Project) -> dict[str, Any]:
        """What ``projects show`` adds to a project: the branch its folder is on and its unfinished jobs."""
        from engine.gitrepo import Git
        from engine.worktrees import folder_of

        branch = None
        folder = folder_of(project)
        if folder is not None and (top := await Git.toplevel(folder)):
            try:
                head = await Git(top).head()
                branch = head.branch or f"detached HEAD at {head.sha[:10]}"
            except WorkspaceError:
                branch = "(no commit yet)"
        return {"branch": branch, "open_jobs": await self.store.open_project_jobs(project.name)}

    async def project_of(self, job: Job) -> Project:
        if not job.project:
            raise ValueError(f"job #{job.id} belongs to no project")
        project = await self.store.get_project(job.project)
        if project is None:
            raise NotFound(f"no project named {job.project!r}")
        return project

    async def job_diff(self, job_id: int, *, stat: bool = False) -> tuple[Job, str]:
        """The change a job made on its branch (``stat``: the summary only)."""
        job = await self.job(job_id)
        return job, await self._work().diff(job, await self.project_of(job), stat=stat)

    async def job_merge(self, job_id: int) -> tuple[Job, MergeOutcome]:
        """Merge a finished job's branch into the project's current branch: a fast-forward or a merge without
        conflicts, else nothing changes and the outcome says why (naming the conflicting files)."""
        job = await self.job(job_id)
        if job.state is not JobState.DONE:
            raise ValueError(f"job #{job_id} is {job.state.value}; only a done job's branch is merged")
        return job, await self._work().merge(job, await self.project_of(job))

    def _work(self) -> ProjectWork:
        # git, the worktrees and the sandbox are loaded by the commands on projects' work, not by every command
        from engine.sandbox import Sandbox
        from engine.worktrees import ProjectWork

        return ProjectWork(Workspace(self.settings.home), lambda: Sandbox.for_settings(self.settings))

    def _wake(self) -> None:
        if self.engine is not None:
            self.engine.wake()
