"""The crash test: `switchboard run` killed with SIGKILL at random moments, restarted, left to finish.

A few hundred jobs (``analysis``, which needs no review, and ``writing``, which is reviewed by another model
family, so review jobs are in flight too) are written into the database by other processes while the engine
runs: this test process through the Store (200 before the first start, the rest in small chunks during each
run and just after each kill) and a few ``switchboard jobs add`` CLI processes (two of them racing on the same
idempotency key). The engine process is killed with SIGKILL (no cleanup of any kind) at seeded random moments,
restarted each time, and finally left to finish and stopped with SIGTERM. Then, from the database and the
processes' captured stdout:

- every job, maker or review, is ``done``; none is left running or reviewing;
- every job reached ``done`` exactly once (one transition event to done per job) and was made exactly once (one
  successful attempt row per job: a run cut short by a kill writes nothing, its completion is all or nothing);
- every reviewed job has exactly one review job and one passing review by another family;
- every maker job has exactly one ``job_done`` outbox row (the unique dedupe key forbids a second; this checks
  that none is missing), no review job has one, and every row is sent;
- the console printed every ``job_done`` message at least once, and printed very few twice (see
  ``_assert_printed``).

The second test sends SIGTERM while jobs run: the process exits 0 within the grace period and no job is left
``running`` (each one finished within the grace or went back to the queue without using an attempt).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine.clock import SystemClock
from engine.job_factory import new_job
from engine.settings import Settings, load_settings
from engine.store import Store
from tests.e2e.configs import READY_LINE, READY_TIMEOUT_S, REPO, SWITCHBOARD, sim_backends_toml

SEED = 20_240_607
KILLS = 6
MAKERS = 300  # written by this process; plus the CLI's
PRE_ADDED = 200
FEED_CHUNK = 2
CLI_KEYS = ["cli-a", "cli-b", "cli-c", "cli-a"]  # the last races the first on the same key
DONE_LINE = re.compile(r"✅ Job #(\d+) done:")

# Several families, 200-400 ms a call. Not 20-80 ms: the engine drains such jobs faster than the kills come
# (measured: 2 to 10 runs interrupted over six kills, most kills landing on an idle engine). At 200-400 ms all
# 19 background slots are busy at every kill, so each kill cuts short about 19 runs (about 110 in all).
# max_concurrency 8 so that no job snoozes for a busy backend (5 s) and a reviewer of another family always has
# room.
_BACKENDS = [
    ("sim-opus", "anthropic", 3, 400),
    ("sim-gpt", "openai", 3, 300),
    ("sim-sonnet", "anthropic", 2, 200),
    ("sim-kimi", "moonshot", 2, 300),
    ("sim-flash", "google", 1, 400),
]


def write_config(tmp_path: Path, *, latency_ms: float | None = None, engine: dict[str, Any] | None = None) -> Path:
    engine_values = {
        # Each kill's start-up sweep uses an attempt of every job it finds running; with the default 3 a job
        # that happened to be running at three of the kills would legitimately end `failed` (worker_lost). The
        # budget of attempts is not what this test is about, so it is out of reach here.
        "max_attempts": 20,
        # Hundreds of queued jobs would keep backpressure on (background work at a trickle of 4 slots): keep all
        # the slots busy instead, so each kill interrupts as much work as possible.
        "backpressure_queue_depth": 100_000,
        **(engine or {}),
    }
    lines = ["[memory]", "enabled = false", "", "[engine]"]
    lines += [f"{key} = {value}" for key, value in engine_values.items()]
    lines.append("")
    backends = [(n, f, tier, latency if latency_ms is None else latency_ms) for n, f, tier, latency in _BACKENDS]
    lines += sim_backends_toml(backends, max_concurrency=8)
    path = tmp_path / "switchboard.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Process:
    """One `switchboard run --no-console`, its stdout and stderr read continuously (a full pipe would stall it)."""

    def __init__(self, home: Path, config: Path) -> None:
        self.home = home
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *_command(self.config, "run", "--no-console"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(self.home),
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.process.stdout, self.stdout, ready_on=READY_LINE)),
            asyncio.create_task(self._pump(self.process.stderr, self.stderr)),
        ]
        exited = asyncio.create_task(self.process.wait())
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            ready.cancel()
        if not self._ready.is_set():
            raise AssertionError(f"switchboard did not start (exit {self.process.returncode}): {self.err_text()}")

    async def _pump(self, stream: asyncio.StreamReader, into: list[str], ready_on: bytes | None = None) -> None:
        async for raw in stream:
            into.append(raw.decode("utf-8", errors="replace"))
            if ready_on and raw.startswith(ready_on):  # the engine runs and the console channel is up
                self._ready.set()

    async def kill(self) -> int:
        assert self.process is not None
        self.process.kill()  # SIGKILL
        return await self._finish(10.0)

    async def terminate(self, timeout_s: float) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self._finish(timeout_s)

    async def _finish(self, timeout_s: float) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await asyncio.wait_for(asyncio.gather(*self._pumps), 10.0)  # the pipes hold what it wrote before dying
        return code

    async def ensure_stopped(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        # The pipes are read to their end (a dead process closes them): a reader cancelled midway would leave the
        # pipe transports open for the garbage collector to close after the loop ("Event loop is closed").
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 10.0)

    def out_text(self) -> str:
        return "".join(self.stdout)

    def err_text(self) -> str:
        return "".join(self.stderr)[-3000:]


def _command(config: Path, *args: str) -> list[str]:
    return [str(SWITCHBOARD), "--config", str(config), *args]


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_HOME": str(home),
        "PYTHONIOENCODING": "utf-8",
        "MPLCONFIGDIR": str(home / "mpl"),
        "PYTHONPATH": str(REPO),
    }


def _query(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{home / 'switchboard.db'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _scalar(home: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    return int(_query(home, sql, params)[0][0])


async def _eventually(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def _specs() -> list[tuple[str, str, str]]:
    """(idempotency key, type, prompt): two in three analysis, one in three writing (reviewed)."""
    specs = []
    for i in range(MAKERS):
        kind = "writing" if i % 3 == 0 else "analysis"
        specs.append((f"crash-{i}", kind, f"crash test {kind} job {i}: summarise item {i}"))
    return specs


async def _feed(store: Store, settings: Settings, specs: list[tuple[str, str, str]], over_s: float = 0.0) -> None:
    """Another process writing to the same database, in chunks spread over ``over_s`` seconds."""
    chunks = [specs[start : start + FEED_CHUNK] for start in range(0, len(specs), FEED_CHUNK)]
    for chunk in chunks:
        await store.enqueue_many(new_job(settings, type=t, prompt=p, idempotency_key=k) for k, t, p in chunk)
        await asyncio.sleep(over_s / len(chunks))


async def _cli_adds(home: Path, config: Path) -> list[dict[str, Any]]:
    """`switchboard jobs add --key` from separate processes, two of them racing on one key."""

    async def add(key: str) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            *_command(config, "jobs", "add", f"crash test writing job from the CLI, key {key}"),
            "--type",
            "writing",
            "--key",
            key,
            "--json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(home),
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), 120.0)
        finally:  # cancelled with the test (it failed elsewhere): no process, no transport left behind
            if process.returncode is None:
                process.kill()
                await process.communicate()
        assert process.returncode == 0, err.decode()
        return json.loads(out)

    return list(await asyncio.gather(*(add(key) for key in CLI_KEYS)))


@pytest.mark.timeout(900)  # seven starts and about 400 jobs; generous for a loaded machine, each wait is on an event
async def test_sigkill_at_random_moments_then_every_job_done_once_and_notified_once(tmp_path: Path) -> None:
    began = time.monotonic()
    home = tmp_path / "home"
    config = write_config(tmp_path)
    settings = load_settings(config)
    specs = _specs()
    rng = random.Random(SEED)
    processes: list[Process] = []
    interrupted: list[tuple[int, int, int]] = []  # per kill: jobs running, jobs reviewing, queued
    store = await Store.open(home / "switchboard.db", SystemClock())
    feeder: asyncio.Task[None] | None = None
    cli: asyncio.Task[list[dict[str, Any]]] | None = None
    try:
        await _feed(store, settings, specs[:PRE_ADDED])  # work waiting before the first start
        share = -(-(len(specs) - PRE_ADDED) // KILLS)
        for index in range(KILLS):
            process = Process(home, config)
            processes.append(process)
            await process.start()
            if index == 1:
                cli = asyncio.create_task(_cli_adds(home, config))
            # This run's share of the jobs arrives in chunks spread over its life, up to the kill: every kill
            # lands on work in flight (the jobs take 20-80 ms each, so work fed earlier is long done).
            delay = rng.uniform(0.2, 1.5)
            mine = specs[PRE_ADDED + index * share : PRE_ADDED + (index + 1) * share]
            feeder = asyncio.create_task(_feed(store, settings, mine, over_s=delay * 1.25))
            await asyncio.sleep(delay)
            code = await process.kill()
            assert code == -signal.SIGKILL, process.err_text()
            interrupted.append(
                (
                    _scalar(home, "SELECT COUNT(*) FROM jobs WHERE state = 'running'"),
                    _scalar(home, "SELECT COUNT(*) FROM jobs WHERE state = 'reviewing'"),
                    _scalar(home, "SELECT COUNT(*) FROM jobs WHERE state = 'queued'"),
                )
            )
            await asyncio.wait_for(feeder, 10.0)  # the last chunk, if any, is written while the engine is dead

        final = Process(home, config)
        processes.append(final)
        await final.start()
        assert cli is not None
        added = await asyncio.wait_for(cli, 120.0)
        # Idempotent enqueue across restarts: every key again, no new job.
        again = await store.enqueue_many(new_job(settings, type=t, prompt=p, idempotency_key=k) for k, t, p in specs)
        makers = len(specs) + len(set(CLI_KEYS))
        await _eventually(lambda: _settled(home, makers), 300.0, "every job done and every notification sent")
        code = await final.terminate(60.0)
        assert code == 0, final.err_text()
    finally:
        tasks = [task for task in (feeder, cli) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their clean-up runs before the loop closes
        for process in processes:
            await process.ensure_stopped()
        await store.close()

    by_key = {row["idempotency_key"]: row for row in added}
    assert sorted(by_key) == sorted(set(CLI_KEYS))
    assert added[0]["id"] == added[3]["id"], "the same key made two jobs"
    assert [row["created"] for row in (added[0], added[3])].count(True) == 1, added
    assert all(job.idempotency_key == key for job, (key, _, _) in zip(again, specs, strict=True))
    assert _scalar(home, "SELECT COUNT(*) FROM jobs WHERE parent_id IS NULL") == makers

    _assert_every_job_done_once(home, makers)
    _assert_each_notification_once(home)
    duplicates = _assert_printed(home, processes)

    swept = _scalar(home, "SELECT COUNT(*) FROM events WHERE reason LIKE 'orphan sweep%'")
    total = _scalar(home, "SELECT COUNT(*) FROM jobs")
    print(
        f"\ncrash test: {KILLS} kills, {total} jobs ({makers} makers), {swept} runs recovered by the start-up sweep, "
        f"interrupted (running, reviewing, queued) per kill {interrupted}, {duplicates} job_done line(s) printed "
        f"twice, {time.monotonic() - began:.1f} s"
    )
    assert swept == sum(running for running, _, _ in interrupted)  # each run cut short was recovered, once
    assert all(running for running, _, _ in interrupted), "every kill should land on work in flight"
    assert any(reviewing for _, reviewing, _ in interrupted), "some kill should land while reviews are in flight"


def _settled(home: Path, makers: int) -> bool:
    try:
        open_jobs = _scalar(home, "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('done', 'failed', 'cancelled')")
        unsent = _scalar(home, "SELECT COUNT(*) FROM outbox WHERE state != 'sent'")
        done = _scalar(home, "SELECT COUNT(*) FROM outbox WHERE kind = 'job_done'")
        total = _scalar(home, "SELECT COUNT(*) FROM jobs WHERE parent_id IS NULL")
    except sqlite3.OperationalError:
        return False
    return open_jobs == 0 and unsent == 0 and done >= makers and total >= makers


def _assert_every_job_done_once(home: Path, makers: int) -> None:
    states = {r[0]: r[1] for r in _query(home, "SELECT state, COUNT(*) FROM jobs GROUP BY state")}
    not_done = _query(
        home, "SELECT id, type, state, attempt, last_failure_class, last_error FROM jobs WHERE state != 'done'"
    )
    assert not not_done, (states, [dict(r) for r in not_done[:10]])
    total = sum(states.values())
    writing = _scalar(home, "SELECT COUNT(*) FROM jobs WHERE parent_id IS NULL AND type = 'writing'")
    reviews = _query(home, "SELECT parent_id, COUNT(*) AS n FROM jobs WHERE type = 'review' GROUP BY parent_id")
    assert len(reviews) == writing and all(r["n"] == 1 for r in reviews), "one review job per reviewed job"
    assert total == makers + writing

    # Reached done exactly once: one transition event into done per job.
    dones = collections.Counter(
        r[0] for r in _query(home, "SELECT job_id FROM events WHERE kind = 'transition' AND to_state = 'done'")
    )
    assert len(dones) == total and set(dones.values()) == {1}, {j: n for j, n in dones.items() if n != 1}
    # Made exactly once: a run cut short by a kill writes no attempt (its completion is one transaction).
    successes = collections.Counter(r[0] for r in _query(home, "SELECT job_id FROM attempts WHERE outcome = 'success'"))
    assert len(successes) == total and set(successes.values()) == {1}, {j: n for j, n in successes.items() if n != 1}
    purposes = _query(
        home,
        "SELECT j.type, a.purpose, COUNT(*) AS n FROM attempts a JOIN jobs j ON j.id = a.job_id GROUP BY 1, 2",
    )
    assert all((r["type"] == "review") == (r["purpose"] == "review") for r in purposes), [dict(r) for r in purposes]
    # The gate: one passing review per reviewed job, by another family than the maker's.
    passed = _query(
        home,
        "SELECT r.job_id, r.passed, r.reviewer_family, j.maker_family FROM reviews r JOIN jobs j ON j.id = r.job_id",
    )
    assert len(passed) == writing == len({r["job_id"] for r in passed})
    assert all(r["passed"] and r["reviewer_family"] != r["maker_family"] for r in passed)


def _assert_each_notification_once(home: Path) -> None:
    rows = _query(home, "SELECT dedupe_key, kind, job_id, state FROM outbox")
    keys = collections.Counter(r["dedupe_key"] for r in rows)
    assert max(keys.values()) == 1
    assert all(r["state"] == "sent" for r in rows), [dict(r) for r in rows if r["state"] != "sent"]
    maker_ids = {r[0] for r in _query(home, "SELECT id FROM jobs WHERE parent_id IS NULL")}
    done_rows = collections.Counter(r["job_id"] for r in rows if r["kind"] == "job_done")
    assert set(done_rows) == maker_ids, {
        "missing": sorted(maker_ids - set(done_rows))[:20],
        "unexpected": sorted(set(done_rows) - maker_ids)[:20],
    }
    assert set(done_rows.values()) == {1}


def _assert_printed(home: Path, processes: list[Process]) -> int:
    """Every job_done message was printed; returns how many were printed twice.

    Printing is at-least-once, not exactly-once: the console prints a message, then marks it sent in its own
    transaction. A SIGKILL between the two leaves the row pending, and the next process prints it again. The
    console marks each message right after printing it, so at most one message is in that window at any moment:
    at most one duplicate per kill. (Telegram has the same window around its API call; nothing can close it
    without the recipient deduplicating.) Anything more would mean rows are re-sent after being marked.
    """
    printed = collections.Counter(int(m) for process in processes for m in DONE_LINE.findall(process.out_text()))
    maker_ids = {r[0] for r in _query(home, "SELECT id FROM jobs WHERE parent_id IS NULL")}
    assert set(printed) == maker_ids, {
        "never printed": sorted(maker_ids - set(printed))[:20],
        "not a maker job": sorted(set(printed) - maker_ids)[:20],
    }
    duplicates = sum(n - 1 for n in printed.values())
    assert duplicates <= KILLS, {j: n for j, n in printed.items() if n > 1}
    return duplicates


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("latency_ms", "grace_s", "outcome"),
    [(300.0, 5.0, "finished"), (30_000.0, 0.5, "requeued")],
    ids=["jobs-finish-within-grace", "jobs-return-to-queue"],
)
async def test_sigterm_during_work_exits_0_within_grace_and_leaves_nothing_running(
    tmp_path: Path, latency_ms: float, grace_s: float, outcome: str
) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path, latency_ms=latency_ms, engine={"shutdown_grace_s": grace_s})
    settings = load_settings(config)
    store = await Store.open(home / "switchboard.db", SystemClock())
    try:
        await store.enqueue_many(
            new_job(settings, type="analysis", prompt=f"sigterm test job {i}", idempotency_key=f"term-{i}")
            for i in range(60)
        )
    finally:
        await store.close()
    process = Process(home, config)
    try:
        await process.start()
        await _eventually(
            lambda: _scalar(home, "SELECT COUNT(*) FROM jobs WHERE state = 'running'") >= 10, 120.0, "jobs running"
        )
        running_before = {r[0] for r in _query(home, "SELECT id FROM jobs WHERE state = 'running'")}
        sent = time.monotonic()
        code = await process.terminate(grace_s + 10.0)
        took = time.monotonic() - sent
    finally:
        await process.ensure_stopped()

    assert code == 0, process.err_text()
    assert "stopped cleanly" in process.err_text()
    # Right after a clean stop, status says so (not "running" until three sweep intervals passed).
    status = await asyncio.create_subprocess_exec(
        *_command(config, "status", "--json"), env=_env(home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(status.communicate(), 30)
    finally:  # no process left behind if it hung
        if status.returncode is None:
            status.kill()
            await status.communicate()
    engine_status = json.loads(out)["engine"]
    assert engine_status["alive"] is False and engine_status["stopped"] is True, out
    assert took <= grace_s + 2.0, f"took {took:.1f}s to stop with a grace of {grace_s}s"
    states = {r[0]: r[1] for r in _query(home, "SELECT state, COUNT(*) FROM jobs GROUP BY state")}
    assert set(states) <= {"done", "queued"}, states
    assert sum(states.values()) == 60
    after = {r["id"]: r for r in _query(home, "SELECT id, state, attempt FROM jobs")}
    requeued = {
        r[0] for r in _query(home, "SELECT job_id FROM events WHERE reason = 'shutdown: returned to the queue'")
    }
    done_rows = {r[0] for r in _query(home, "SELECT job_id FROM outbox WHERE kind = 'job_done'")}
    assert done_rows == {i for i, r in after.items() if r["state"] == "done"}  # each finish has its notification
    if outcome == "finished":
        # Every job running at the signal (and any claimed just after the snapshot) finished within the grace.
        assert all(after[i]["state"] == "done" for i in running_before), {i: after[i]["state"] for i in running_before}
        assert not requeued
    else:
        # None could finish: each went back to the queue, its attempt not used up, ready for the next start.
        assert states == {"queued": 60}
        assert running_before <= requeued
        assert all(r["attempt"] == 0 for r in after.values())
    print(f"\nsigterm ({outcome}): {len(running_before)} running at the signal, stopped in {took:.2f}s, {states}")
