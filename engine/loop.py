"""The engine loop: wait for work, claim up to the free slots, run each job in its own task.

Wake-ups: an enqueue in this process (``wake``), a commit by another process (``PRAGMA data_version``
polled every ``cross_process_poll_s``), and the ``tick_s`` safety tick. Finishes are grouped: every
completion that is ready goes to the database in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from engine import notices, process
from engine.backends.base import Backend
from engine.capacity import Capacity
from engine.clock import Clock
from engine.control import Control
from engine.errors import describe_error
from engine.models import Job, JobState, NewJob, Priority
from engine.passes import Passes
from engine.persona_actions import PersonaActions
from engine.redaction import Redactor
from engine.routing import Router
from engine.runner import EngineHooks, JobRunner, NoHooks
from engine.settings import Settings
from engine.store import Completion, EngineRunning, GateRefused, LeaseLost, Store, StoreError
from engine.vocab import ALIVE_KEY, STOPPED_MARK
from engine.workspace import Workspace

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        backends: dict[str, Backend],
        clock: Clock,
        hooks: EngineHooks | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.settings = settings
        # Every exit of the engine passes it: what backends send and return, and every completion written.
        self.redactor = redactor or Redactor.from_settings(settings)
        self.store = store
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.capacity = Capacity(settings.engine, clock)
        self.router = Router(settings, {name: self.redactor.backend(b) for name, b in backends.items()}, clock)
        self._backends = backends
        self._runner = JobRunner(
            settings,
            store,
            self.router,
            self.capacity,
            clock,
            Workspace(settings.home, redact=self.redactor),
            hooks or NoHooks(),
            self.owner,
            self._submit,
        )
        # The persona's actions go through the operator's verbs, as the slash commands do.
        self._runner.persona_actions = PersonaActions(Control(settings, store, clock, self))
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: dict[int, tuple[asyncio.Task[None], bool]] = {}  # job id -> (task, is_operator)
        self._pending: list[tuple[Completion, asyncio.Future[Job | None]]] = []
        self._flush_scheduled = False
        self._background: list[asyncio.Task[None]] = []
        self.backpressure = False
        self._store_error = ""  # the store error last told (see _tell_once)
        self._engine_lease_s = 3 * settings.engine.sweep_interval_s  # as `status` judges liveness
        self._lease_lost = False
        self.passes = Passes()  # dispatch passes of the loop: `passes.next_whole()` waits until it looked again

    # ---- public surface -------------------------------------------------------------------------------

    def use_persona_actions(self, actions: PersonaActions) -> None:
        """What the persona's actions go through (the composition root's, which also reaches memory)."""
        self._runner.persona_actions = actions

    async def start(self) -> None:
        """Recover orphans of a previous process, then start the loop and its watchers."""
        # The data folder's engine lease first: the sweep below takes every running job, so it must never run
        # beside a live engine (whatever happened to the lock file).
        holder = await self.store.engine_lease_acquire(
            self.owner, process.current(), self._engine_lease_s, gone=process.is_gone
        )
        if holder is not None:
            raise EngineRunning(
                f"another engine is running on {self.settings.home} (pid {holder.pid} on {holder.host}, "
                f"lease held until {time.strftime('%H:%M:%S UTC', time.gmtime(holder.expires_at))}): stop it first"
            )
        swept = await self.store.sweep_orphans(everything_running=True)
        if swept:
            log.info("recovered %d job(s) left running by a previous process", len(swept))
        self.backpressure = (await self.store.kv_get("backpressure")) == "on"
        self._background = [
            asyncio.create_task(self._loop(), name="engine-loop"),
            asyncio.create_task(self._watch_other_processes(), name="engine-data-version"),
            asyncio.create_task(self._sweep_periodically(), name="engine-sweep"),
        ]

    def wake(self) -> None:
        self._wake.set()

    def stop_job(self, job_id: int) -> bool:
        """Cancel a job's task in this process (its worker process is killed with it). True if it was here.
        Another process's engine notices a cancel at its next heartbeat instead."""
        entry = self._tasks.get(job_id)
        if entry is None:
            return False
        entry[0].cancel()
        return True

    async def submit(self, new: NewJob) -> tuple[Job, bool]:
        job, created = await self.store.enqueue(new)
        self.wake()
        return job, created

    @property
    def running(self) -> int:
        return len(self._tasks)

    def running_counts(self) -> tuple[int, int]:
        operator = sum(1 for _, is_op in self._tasks.values() if is_op)
        return operator, len(self._tasks) - operator

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; give running jobs ``grace_s`` to finish; return the rest to the queue."""
        self._stopping.set()
        self._wake.set()
        grace = self.settings.engine.shutdown_grace_s if grace_s is None else grace_s
        tasks = [task for task, _ in self._tasks.values()]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=grace)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._flush()
        await self._requeue_own_running()
        try:  # a clean stop clears the liveness mark: `status` says stopped at once, not after three sweeps
            await self.store.kv_set_if_changed(ALIVE_KEY, f"{self.clock.now():.0f} {self.owner} {STOPPED_MARK}")
        except Exception:
            log.exception("could not record the engine's clean stop")
        with contextlib.suppress(Exception):
            await self.store.engine_lease_release(self.owner)

    # ---- the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self.passes.begin()
            try:
                claimed = await self._dispatch()
                self._store_error = ""
            except StoreError as exc:  # full disk, read-only folder, locked database
                self._tell_once(exc)
                claimed = 0
            except Exception:  # the loop must survive a bad moment
                log.exception("dispatch failed; retrying on the next wake-up")
                claimed = 0
            self.passes.end()
            if claimed and not self._stopping.is_set():
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.engine.tick_s)

    def _tell_once(self, exc: StoreError) -> None:
        """A store error in one sentence, said once until it changes or clears (not at every wake-up)."""
        if str(exc) != self._store_error:
            self._store_error = str(exc)
            log.error("switchboard: %s; no job is started until it is fixed", exc)

    async def _dispatch(self) -> int:
        if self._lease_lost:
            return 0
        running_op, running_bg = self.running_counts()
        limits = self.capacity.limits(running_op, running_bg)
        if limits.free_slots <= 0:
            return 0
        await self._update_backpressure()
        self.router.states = await self.store.backend_states()
        max_priority = Priority.HIGH if self.backpressure else Priority.LOW
        lease_s = self.settings.engine.lease_s
        jobs = await self.store.claim(
            self.owner,
            free_slots=limits.free_slots,
            background_limit=limits.background_limit,
            lease_s=lease_s,
            background_max_priority=max_priority,
        )
        if self.backpressure:
            # Operator and high-priority work go first; the rest drains at a trickle rather than stalling.
            trickle = self._trickle() - running_bg - sum(1 for j in jobs if j.priority != Priority.OPERATOR)
            room = min(trickle, limits.background_limit - len(jobs), limits.free_slots - len(jobs))
            if room > 0:
                jobs += await self.store.claim(
                    self.owner,
                    free_slots=room,
                    background_limit=room,
                    lease_s=lease_s,
                    background_max_priority=Priority.LOW,
                )
        for job in jobs:
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self._tasks[job.id] = (task, job.priority == Priority.OPERATOR)
        return len(jobs)

    def _trickle(self) -> int:
        """Background slots under backpressure: a quarter of the non-reserved ones, at least one."""
        engine = self.settings.engine
        return max(1, (engine.max_slots - engine.reserved_operator_slots) // 4)

    async def _run(self, job: Job) -> None:
        try:
            await self._runner.run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one job must not take the engine down
            if isinstance(exc, StoreError):
                self._tell_once(exc)
            else:
                log.exception("job %s crashed the runner", job.id)
            try:  # fenced: only while this engine still holds the job (not after a sweep gave it to another)
                await self.store.transition(
                    job.id,
                    JobState.FAILED,
                    f"internal error: {type(exc).__name__}",
                    fields={
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "last_failure_class": "unknown",
                        "last_error": self.redactor(str(exc))[:500],
                    },
                    owner=self.owner,
                )
            except LeaseLost:
                log.warning("job %s: left as it is: its lease is no longer this engine's", job.id)
            except Exception as mark_exc:
                log.warning("job %s: could not mark it failed after the crash (%s); the orphan sweep takes "
                            "it when its lease expires", job.id, describe_error(mark_exc))
        finally:
            self._tasks.pop(job.id, None)
            self._wake.set()

    async def _update_backpressure(self) -> None:
        threshold = self.settings.engine.backpressure_queue_depth
        depth = await self.store.queue_depth(cap=threshold + 1)
        on = self.capacity.backpressure(depth)
        if on == self.backpressure:
            return
        self.backpressure = on
        now = int(self.clock.now())
        queued = f"more than {threshold}" if depth > threshold else str(depth)
        text = (
            f"Backpressure on: {queued} jobs queued, {self.capacity.tokens_in_window():,} tokens in 5 min. "
            "Your own and high-priority jobs go first; other work drains slowly until it eases."
            if on
            else "Backpressure off: background work starts again."
        )
        await self.store.kv_set_if_changed(
            "backpressure", "on" if on else "off", outbox=[notices.info(f"backpressure:{on}:{now}", text)]
        )

    # ---- grouped completions --------------------------------------------------------------------------

    async def _submit(self, completion: Completion) -> Job | None:
        future: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._pending.append((self._redacted(completion), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await future

    def _redacted(self, completion: Completion) -> Completion:
        """The completion with every secret masked: results, summaries, errors, attempts, outbox text, reviews,
        follow-up jobs (a review prompt holds the maker's work) and the assistant's message. The claimed
        snapshot is kept as it is: the store fences on it and never writes it."""
        redacted = self.redactor.model(completion.model_copy(update={"snapshot": None}))
        return redacted.model_copy(update={"snapshot": completion.snapshot})

    async def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results = await self.store.complete_many([c for c, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (completion, future), result in zip(batch, results, strict=True):
            if isinstance(result, (LeaseLost, GateRefused)):
                log.warning("job %s: completion refused: %s", completion.job_id, result)
                future.set_result(None)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._wake.set()

    # ---- watchers -------------------------------------------------------------------------------------

    async def _watch_other_processes(self) -> None:
        """Notice commits by other processes (the CLI adding a job) within a poll interval."""
        last = await self.store.data_version()
        while not self._stopping.is_set():
            await asyncio.sleep(self.settings.engine.cross_process_poll_s)
            try:
                version = await self.store.data_version()
            except Exception:
                log.exception("data_version poll failed")
                continue
            if version != last:
                last = version
                self._wake.set()

    async def _sweep_periodically(self) -> None:
        """Sweep expired leases, and record that this engine is alive (`switchboard status --check` reads it)."""
        while not self._stopping.is_set():
            try:
                if not await self.store.engine_lease_renew(self.owner, self._engine_lease_s):
                    self._engine_lease_lost()
                await self.store.kv_set_if_changed(ALIVE_KEY, f"{self.clock.now():.0f} {self.owner}")
            except StoreError as exc:
                self._tell_once(exc)
            except Exception:
                log.exception("could not record the engine's heartbeat")
            await self.clock.sleep(self.settings.engine.sweep_interval_s)
            try:
                swept = await self.store.sweep_orphans()
            except StoreError as exc:
                self._tell_once(exc)
                continue
            except Exception:
                log.exception("orphan sweep failed")
                continue
            for job in swept:
                task = self._tasks.get(job.id)
                if task is not None:
                    task[0].cancel()
            if swept:
                self._wake.set()

    def _engine_lease_lost(self) -> None:
        """Another engine took this data folder over (this one stalled past its lease): start nothing more.
        Its running jobs were swept by the other engine; their heartbeats and finishes are fenced and fail."""
        if not self._lease_lost:
            self._lease_lost = True
            home = self.settings.home
            log.error("switchboard: another engine took over %s; this one starts no more jobs: stop it", home)

    async def _requeue_own_running(self) -> None:
        """Jobs this process still holds go back to the queue (no attempt used): nothing is lost."""
        for job in await self.store.list_jobs(states=[JobState.RUNNING], limit=10_000):
            if job.lease_owner == self.owner:
                try:
                    await self.store.transition(
                        job.id,
                        JobState.QUEUED,
                        "shutdown: returned to the queue",
                        fields={"lease_owner": None, "lease_expires_at": None},
                        expected=[JobState.RUNNING],
                        owner=self.owner,
                    )
                except Exception as exc:
                    log.warning("job %s: could not return it to the queue at shutdown (%s); the orphan sweep at "
                                "the next start requeues it", job.id, describe_error(exc))
