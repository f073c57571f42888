"""The job store on real SQLite files: transitions through the store, idempotent enqueue across OS processes,
fenced claims and finishes, heartbeats, and the orphan sweep."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.errors import IllegalTransition
from engine.job_factory import new_job
from engine.models import Job, JobState, Priority
from engine.settings import Settings
from engine.states import is_legal
from engine.store import Completion, LeaseLost, Store

REPO = Path(__file__).resolve().parents[2]
S = JobState
ALL_PAIRS = list(itertools.product(JobState, JobState))
LEASE_S = 60.0


def job_of(settings: Settings, text: str = "look into it", **kwargs: object) -> object:
    return new_job(settings, type=kwargs.pop("type", "analysis"), prompt=text, **kwargs)  # type: ignore[arg-type]


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


async def run_children(script: str, argvs: list[list[str]], go: Path) -> list[str]:
    """Start one ``python -c script`` per argv; each prints "ready" once its store is open. Then touch ``go``
    so they all write at once, and return their outputs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, *argv, stdout=PIPE, stderr=PIPE, cwd=REPO, env=env
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line.strip() == b"ready", (line, await proc.stderr.read())  # type: ignore[union-attr]
        await asyncio.to_thread(go.touch)
        outputs = [await asyncio.wait_for(proc.communicate(), timeout=30) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    return [out.decode().strip() for out, _ in outputs]


# ---- transitions through the store --------------------------------------------------------------------


@pytest.mark.parametrize(("from_state", "to_state"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
async def test_transition_through_store(
    store: Store, settings: Settings, from_state: JobState, to_state: JobState
) -> None:
    job, _ = await store.enqueue(job_of(settings))  # analysis: no review, so done is reachable
    with raw(store.path) as conn:
        conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (from_state.value, job.id))
    events_before = await store.job_events(job.id)

    if is_legal(from_state, to_state):
        moved = await store.transition(job.id, to_state, "test")
        assert moved.state == to_state
        events = await store.job_events(job.id)
        assert len(events) == len(events_before) + 1
        assert (events[-1].from_state, events[-1].to_state, events[-1].reason) == (from_state, to_state, "test")
    else:
        with pytest.raises(IllegalTransition):
            await store.transition(job.id, to_state, "test")
        unchanged = await store.get_job(job.id)
        assert unchanged is not None and unchanged.state == from_state
        assert await store.job_events(job.id) == events_before


async def test_illegal_transition_writes_no_outbox_row(store: Store, settings: Settings) -> None:
    from engine.store import NewOutbox

    job, _ = await store.enqueue(job_of(settings))
    with pytest.raises(IllegalTransition):
        await store.transition(job.id, S.DONE, "skip ahead", outbox=[NewOutbox(dedupe_key="x", kind="info", text="x")])
    assert await store.outbox_all() == []


# ---- idempotent enqueue under concurrent writers ----------------------------------------------------------

_ENQUEUER = """
import asyncio, os, sys, time
from pathlib import Path
from engine.clock import SystemClock
from engine.models import NewJob
from engine.store import Store

def job(key):
    return NewJob(type="analysis", prompt=f"work {key}", tier=2, max_attempts=3, max_revisions=2,
                  review_required=False, idempotency_key=key)

async def main(db, go, keys):
    store = await Store.open(Path(db), SystemClock())
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    created = 0
    for key in keys:
        _, made = await store.enqueue(job(key))
        created += made
    await store.close()
    print(created, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(",")))
"""


async def test_idempotent_enqueue_across_processes(store: Store, settings: Settings, tmp_path: Path) -> None:
    keys = [f"key-{i}" for i in range(60)]
    go = tmp_path / "go"
    # Three writers, each starting at a different key, so they race on the same keys.
    argvs = [[str(store.path), str(go), ",".join(keys[n:] + keys[:n])] for n in (0, 8, 16)]
    outputs = await run_children(_ENQUEUER, argvs, go)
    assert sum(int(out) for out in outputs) == len(keys)

    with raw(store.path) as conn:
        per_key = dict(conn.execute("SELECT idempotency_key, COUNT(*) FROM jobs GROUP BY idempotency_key"))
    assert per_key == {key: 1 for key in keys}

    # The same key in this process returns the live job.
    again, created = await store.enqueue(job_of(settings, "work key-0", idempotency_key="key-0"))
    assert not created and again.idempotency_key == "key-0"


@pytest.mark.parametrize("ending", [S.FAILED, S.CANCELLED])
async def test_failed_or_cancelled_job_frees_its_key(store: Store, settings: Settings, ending: JobState) -> None:
    first, created = await store.enqueue(job_of(settings, idempotency_key="k"))
    assert created
    await store.transition(first.id, ending, "gone")
    second, created = await store.enqueue(job_of(settings, idempotency_key="k"))
    assert created and second.id != first.id
    # ... and the new job holds the key again.
    third, created = await store.enqueue(job_of(settings, idempotency_key="k"))
    assert not created and third.id == second.id
    # An operator retry of the old job would make two live jobs with one key: the unique index refuses,
    # and says so (this is not a quality-gate refusal).
    with pytest.raises(sqlite3.IntegrityError, match=r"UNIQUE constraint failed: jobs\.idempotency_key"):
        await store.retry(first.id)
    assert (await store.get_job(first.id)).state == ending  # type: ignore[union-attr]


async def test_done_job_keeps_its_key(store: Store, settings: Settings) -> None:
    job, _ = await store.enqueue(job_of(settings, idempotency_key="k"))
    await store.transition(job.id, S.RUNNING, "t")
    await store.transition(job.id, S.DONE, "t")
    same, created = await store.enqueue(job_of(settings, idempotency_key="k"))
    assert not created and same.id == job.id


# ---- claims, fencing, heartbeats ---------------------------------------------------------------------------


async def claim_one(store: Store, owner: str) -> Job:
    claimed = await store.claim(owner, free_slots=1, background_limit=1, lease_s=LEASE_S)
    assert len(claimed) == 1
    return claimed[0]


async def test_swept_worker_cannot_complete(store: Store, settings: Settings, clock: FakeClock) -> None:
    job, _ = await store.enqueue(job_of(settings))
    claimed = await claim_one(store, "worker-a")
    assert claimed.id == job.id and claimed.lease_owner == "worker-a"
    assert await store.heartbeat(job.id, "worker-a", LEASE_S)

    clock.advance(LEASE_S + 1)
    swept = await store.sweep_orphans()
    assert [j.id for j in swept] == [job.id]

    assert not await store.heartbeat(job.id, "worker-a", LEASE_S)
    with pytest.raises(LeaseLost):
        await store.complete(Completion(job_id=job.id, owner="worker-a", to_state=S.DONE, reason="late"))
    after = await store.get_job(job.id)
    assert after is not None and after.state == S.QUEUED and after.lease_owner is None

    # A new owner claims it; the old one still cannot finish it, the new one can.
    await claim_one(store, "worker-b")
    with pytest.raises(LeaseLost):
        await store.complete(Completion(job_id=job.id, owner="worker-a", to_state=S.DONE, reason="late"))
    done = await store.complete(Completion(job_id=job.id, owner="worker-b", to_state=S.DONE, reason="ok"))
    assert done.state == S.DONE and done.lease_owner is None


async def test_heartbeat_extends_the_lease(store: Store, settings: Settings, clock: FakeClock) -> None:
    await store.enqueue(job_of(settings))
    job = await claim_one(store, "w")
    clock.advance(LEASE_S - 1)
    assert await store.heartbeat(job.id, "w", LEASE_S, progress="half way")
    clock.advance(LEASE_S - 1)
    assert await store.sweep_orphans() == []  # the renewed lease has not expired
    renewed = await store.get_job(job.id)
    assert renewed is not None and renewed.progress == "half way"
    assert renewed.lease_expires_at == pytest.approx(clock.now() + 1)


async def test_cancel_fences_the_worker(store: Store, settings: Settings) -> None:
    await store.enqueue(job_of(settings))
    job = await claim_one(store, "w")
    await store.cancel(job.id)
    assert not await store.heartbeat(job.id, "w", LEASE_S)
    with pytest.raises(LeaseLost):
        await store.complete(Completion(job_id=job.id, owner="w", to_state=S.DONE, reason="late"))
    assert (await store.get_job(job.id)).state == S.CANCELLED  # type: ignore[union-attr]


async def test_wrong_owner_cannot_heartbeat_or_complete(store: Store, settings: Settings) -> None:
    await store.enqueue(job_of(settings))
    job = await claim_one(store, "owner")
    assert not await store.heartbeat(job.id, "intruder", LEASE_S)
    with pytest.raises(LeaseLost):
        await store.complete(Completion(job_id=job.id, owner="intruder", to_state=S.DONE, reason="x"))
    assert (await store.get_job(job.id)).lease_owner == "owner"  # type: ignore[union-attr]


async def test_two_stores_never_claim_the_same_job(store: Store, settings: Settings, clock: FakeClock) -> None:
    total = 300
    await store.enqueue_many(job_of(settings, f"job {i}") for i in range(total))
    other = await Store.open(store.path, clock)
    try:

        async def drain(s: Store, owner: str) -> list[int]:
            ids: list[int] = []
            while batch := await s.claim(owner, free_slots=3, background_limit=3, lease_s=LEASE_S):
                ids += [j.id for j in batch]
                # Let the other connection's busy handler in (SQLite's lock is not fair under a tight loop).
                await asyncio.sleep(0.001)
            return ids

        drained = await asyncio.gather(drain(store, "a"), drain(other, "b"), drain(store, "c"), drain(other, "d"))
    finally:
        await other.close()
    claimed = [job_id for ids in drained for job_id in ids]
    assert drained[0] + drained[2] and drained[1] + drained[3], "both stores got work: the claims interleaved"
    assert len(claimed) == total and len(set(claimed)) == total
    with raw(store.path) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM events WHERE reason = 'claimed'").fetchone()[0]
    assert rows == total  # one claim event per job: nobody claimed twice


_CLAIMER = """
import asyncio, os, sys, time
from pathlib import Path
from engine.clock import SystemClock
from engine.store import Store

async def main(db, go, owner):
    store = await Store.open(Path(db), SystemClock())
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    ids = []
    while batch := await store.claim(owner, free_slots=2, background_limit=2, lease_s=60):
        ids += [j.id for j in batch]
    await store.close()
    print(",".join(map(str, ids)), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


async def test_claims_across_processes_are_exclusive(store: Store, settings: Settings, tmp_path: Path) -> None:
    total = 200
    await store.enqueue_many(job_of(settings, f"job {i}") for i in range(total))
    # The children use the system clock; the jobs must be due for them.
    with raw(store.path) as conn:
        conn.execute("UPDATE jobs SET run_after = 0")
    go = tmp_path / "go-claim"
    outputs = await run_children(_CLAIMER, [[str(store.path), str(go), f"proc-{n}"] for n in range(3)], go)
    ids = [int(x) for out in outputs for x in out.split(",") if x]
    assert sorted(ids) == list(range(1, total + 1))


async def test_claim_order_operator_first_then_priority_then_age(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    low, _ = await store.enqueue(job_of(settings, "low", priority=Priority.LOW))
    normal, _ = await store.enqueue(job_of(settings, "normal"))
    clock.advance(1)
    later, _ = await store.enqueue(job_of(settings, "normal later"))
    operator, _ = await store.enqueue(job_of(settings, "mine", priority=Priority.OPERATOR))
    future, _ = await store.enqueue(job_of(settings, "not yet", run_after=clock.now() + 100))
    claimed = await store.claim("w", free_slots=10, background_limit=10, lease_s=LEASE_S)
    assert [j.id for j in claimed] == [operator.id, normal.id, later.id, low.id]
    assert future.id not in {j.id for j in claimed}


async def test_claim_respects_background_limit_and_backpressure(store: Store, settings: Settings) -> None:
    for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.OPERATOR):
        await store.enqueue(job_of(settings, priority.name, priority=priority))
    claimed = await store.claim(
        "w", free_slots=5, background_limit=5, lease_s=LEASE_S, background_max_priority=Priority.HIGH
    )
    assert [j.priority for j in claimed] == [Priority.OPERATOR, Priority.HIGH]
    none = await store.claim("w", free_slots=5, background_limit=0, lease_s=LEASE_S)
    assert none == []


# ---- lease expiry recovery ---------------------------------------------------------------------------------


async def test_sweep_requeues_expired_and_fails_exhausted(store: Store, settings: Settings, clock: FakeClock) -> None:
    fresh, _ = await store.enqueue(job_of(settings, "fresh"))
    last_try, _ = await store.enqueue(job_of(settings, "last try"))
    with raw(store.path) as conn:  # the second job is on its last attempt
        conn.execute("UPDATE jobs SET attempt = max_attempts - 1 WHERE id = ?", (last_try.id,))
    await store.claim("dead-worker", free_slots=2, background_limit=2, lease_s=LEASE_S)
    clock.advance(LEASE_S / 2)
    still_leased, _ = await store.enqueue(job_of(settings, "still leased"))
    await claim_one(store, "live-worker")

    assert await store.sweep_orphans() == []  # nothing expired yet
    clock.advance(LEASE_S / 2 + 1)
    swept = {j.id: j for j in await store.sweep_orphans()}
    assert set(swept) == {fresh.id, last_try.id}

    requeued = swept[fresh.id]
    assert requeued.state == S.QUEUED and requeued.attempt == 1
    assert requeued.last_failure_class == "worker_lost" and requeued.lease_owner is None
    failed = swept[last_try.id]
    assert failed.state == S.FAILED and failed.last_failure_class == "worker_lost"
    assert failed.finished_at == clock.now()
    assert (await store.get_job(still_leased.id)).state == S.RUNNING  # type: ignore[union-attr]
    events = await store.job_events(fresh.id)
    assert (events[-1].from_state, events[-1].to_state) == (S.RUNNING, S.QUEUED)
    assert "orphan sweep" in events[-1].reason


async def test_sweep_at_start_takes_every_running_job(store: Store, settings: Settings) -> None:
    await store.enqueue_many(job_of(settings, f"job {i}") for i in range(3))
    await store.claim("previous-process", free_slots=3, background_limit=3, lease_s=LEASE_S)
    assert await store.sweep_orphans() == []  # leases still valid
    swept = await store.sweep_orphans(everything_running=True)
    assert len(swept) == 3 and all(j.state == S.QUEUED and j.attempt == 1 for j in swept)
    assert await store.counts_by_state() == {"queued": 3}


async def test_snoozed_and_retry_wait_jobs_wake_when_due(store: Store, settings: Settings, clock: FakeClock) -> None:
    job, _ = await store.enqueue(job_of(settings))
    await claim_one(store, "w")
    await store.complete(
        Completion(job_id=job.id, owner="w", to_state=S.SNOOZED, reason="wait", fields={"run_after": clock.now() + 30})
    )
    assert await store.claim("w", free_slots=1, background_limit=1, lease_s=LEASE_S) == []
    clock.advance(30)
    again = await claim_one(store, "w")
    assert again.id == job.id and again.attempt == 0  # snoozing uses no attempt


async def test_store_reopens_and_keeps_everything(settings: Settings, clock: FakeClock) -> None:
    store = await Store.open(settings.db_path, clock)
    job, _ = await store.enqueue(job_of(settings, idempotency_key="persist"))
    await store.pause_backend("sim-opus", clock.now() + 600, "rate_limited")
    await store.close()
    reopened = await Store.open(settings.db_path, clock)
    try:
        assert (await reopened.get_job(job.id)) == job
        assert (await reopened.backend_states())["sim-opus"].paused_until == clock.now() + 600
        with raw(settings.db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] >= 1
    finally:
        await reopened.close()


async def test_later_shorter_pause_never_shortens(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    first = await store.pause_backend("b", now + 600, "rate_limited")
    assert first.paused_until == now + 600
    shorter = await store.pause_backend("b", now + 60, "quota")
    assert shorter.paused_until == now + 600 and shorter.pause_reason == "rate_limited"
    longer = await store.pause_backend("b", now + 900, "quota")
    assert longer.paused_until == now + 900 and longer.pause_reason == "quota"


async def test_operator_message_update_and_job_are_one_transaction(settings: Settings, store: Store) -> None:
    """A redelivered update creates no second job and no second conversation row; the job and the message are
    written together (a crash between them cannot lose the operator's words)."""
    from engine.models import Source

    chat = new_job(settings, type="chat", prompt="hello", priority=Priority.OPERATOR, source=Source.CHAT, chat_id=7)
    first = await store.accept_operator_message(41, 7, "hello", chat)
    again = await store.accept_operator_message(41, 7, "hello", chat)
    assert first is not None and first.type == "chat" and first.priority == Priority.OPERATOR
    assert again is None
    assert [j.id for j in await store.list_jobs()] == [first.id]
    assert [(m.role, m.text, m.job_id) for m in await store.recent_messages(7)] == [("operator", "hello", first.id)]
    assert not await store.inbox_claim(41)

    broken = chat.model_copy(update={"tier": None})  # the job cannot be written: neither is the update
    with pytest.raises(ValueError):
        await store.accept_operator_message(42, 7, "lost?", broken)
    assert await store.inbox_claim(42)  # not recorded: a redelivery would be handled
    assert len(await store.recent_messages(7)) == 1


async def test_a_job_failed_by_the_sweep_is_announced(settings: Settings, store: Store) -> None:
    job, _ = await store.enqueue(
        new_job(settings, type="analysis", prompt="fragile").model_copy(update={"max_attempts": 1})
    )
    await store.claim("gone", free_slots=1, background_limit=1, lease_s=60)
    [swept] = await store.sweep_orphans(everything_running=True)
    assert swept.state == JobState.FAILED and swept.last_failure_class == "worker_lost"
    [message] = await store.outbox_all()
    assert message.kind == "job_failed" and message.job_id == job.id and "worker_lost" in message.text
