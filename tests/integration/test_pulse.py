"""The pulse, schedules, projects, the digest and quiet hours on a FakeClock: a 24-hour day runs in seconds.

Everything goes through a real SQLite store in tmp_path; time moves only through ``Pulse.advance_to``, which
stops at every moment something is due, in time order, and ticks there (as the real trigger would).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot import render
from engine.backends.base import Backend, BackendRequest, BackendResult, CredentialStatus, ProgressCallback
from engine.backends.sim import SimBackend
from engine.clock import FakeClock
from engine.control import Control
from engine.models import JobState, Source
from engine.pulse import Pulse
from engine.schedule_times import in_quiet_hours, zone
from engine.settings import BackendConfig, Settings
from engine.store import Completion, NewAttempt, NewOutbox, Store
from tests.conftest import instant, sim_backends

DAY = 86_400.0
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # FakeClock's default start, a Thursday, 00:00 UTC


def at(hhmm: str, day: int = 0) -> float:
    hours, minutes = hhmm.split(":")
    return START + day * DAY + int(hours) * 3600 + int(minutes) * 60


def sql(settings: Settings, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Direct SQL on the database file, past the store (WAL lets a second reader in)."""
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def pulse_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(pulse={"quiet_hours": "22:00-07:00", "credential_warn_hours": 2.0})


@pytest.fixture
def make_pulse(store: Store, clock: FakeClock) -> Callable[..., Pulse]:
    def make(settings: Settings, backends: dict[str, Backend] | None = None, **kw: Any) -> Pulse:
        return Pulse(settings, store, clock, backends if backends is not None else {}, **kw)

    return make


async def pulse_events(store: Store) -> list[float]:
    return [e.at for e in await store.events_since(0, limit=10_000) if e.kind == "pulse"]


async def test_a_day_in_seconds_pulse_fires_48_times_schedule_and_digest_on_time(
    pulse_settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    control = Control(pulse_settings, store, clock)
    await control.add_schedule("triage", "check email", type="triage", every="2h")
    await control.add_schedule("morning", "research digest", type="research", daily="06:15")
    pulse = make_pulse(pulse_settings, sim_backends(pulse_settings, clock))

    await pulse.advance_to(START + DAY - 1)

    fired = await pulse_events(store)
    assert len(fired) == 48
    assert fired == [START + i * 1800 for i in range(48)]  # at :00 and :30, never twice, never skipped
    jobs = await store.list_jobs(limit=100)
    triage = sorted(j.created_at for j in jobs if j.type == "triage")
    assert triage == [START + h * 3600 for h in range(2, 24, 2)]  # 02:00 ... 22:00, each exactly on time
    assert [j.created_at for j in jobs if j.type == "research"] == [at("06:15")]
    assert all(j.source == Source.SCHEDULE for j in jobs)
    digests = [m for m in await store.outbox_all() if m.kind == "digest"]
    assert [d.created_at for d in digests] == [at("07:00")]
    assert digests[0].dedupe_key == "digest:2026-01-01"


async def test_schedule_fires_on_time_not_a_second_early(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    await Control(settings, store, clock).add_schedule("brief", "morning brief", type="writing", daily="07:00")
    pulse = make_pulse(settings)
    await pulse.advance_to(at("06:59") + 59)
    assert await store.list_jobs() == []
    await pulse.advance_to(at("07:00"))
    [job] = await store.list_jobs()
    assert (job.created_at, job.type, job.prompt) == (at("07:00"), "writing", "morning brief")
    [schedule] = await store.list_schedules()
    assert schedule.next_run_at == at("07:00", day=1)
    assert schedule.last_run_at == at("07:00")


async def test_restart_in_the_middle_catches_up_missed_runs_exactly_once(
    settings: Settings, store: Store, clock: FakeClock
) -> None:
    control = Control(settings, store, clock)
    await control.add_schedule("triage", "check email", type="triage", every="30m")
    await control.add_schedule("poll", "poll the feed", type="triage", every="30m", catch_up=False)
    await Pulse(settings, store, clock, {}).advance_to(at("10:00"))
    before = await store.list_jobs(limit=1000)
    assert len([j for j in before if j.prompt == "check email"]) == 20  # 00:30 ... 10:00
    await store.close()

    clock.set(at("13:10"))  # down from 10:00 to 13:10: slots 10:30 ... 13:00 (six of them) came due
    reopened = await Store.open(settings.db_path, clock)
    try:
        # Two pulses racing after the restart (say, a second process): the fence lets exactly one through.
        first, second = Pulse(settings, reopened, clock, {}), Pulse(settings, reopened, clock, {})
        results = await asyncio.gather(first.fire_due_schedules(), second.fire_due_schedules())
        caught_up = [job for jobs in results for job in jobs]
        assert len(caught_up) == 1
        assert caught_up[0].prompt == "check email"
        assert caught_up[0].idempotency_key.endswith(str(int(at("13:00"))))
        assert await first.fire_due_schedules() == []  # and never again for the same slots

        missed = [e for e in await reopened.events_since(0, limit=10_000) if e.kind == "schedule_missed"]
        assert sorted(e.data["missed"] for e in missed) == [5, 6]  # 5 folded into the catch-up run; 6 not run
        assert any("not caught up" in e.reason for e in missed)
        notes = [m for m in await reopened.outbox_all() if ":missed:" in m.dedupe_key]
        assert len(notes) == 2 and all("missed" in m.text for m in notes)

        # Back on the grid: the next slot (13:30) fires once for each schedule, on time.
        await first.advance_to(at("13:30"))
        after = await reopened.list_jobs(limit=1000)
        assert len(after) == len(before) + 1 + 2
        assert sorted(j.created_at for j in after if j.created_at > at("13:10")) == [at("13:30"), at("13:30")]
    finally:
        await reopened.close()


class ExpiringBackend(SimBackend):
    """A backend whose OAuth token expires at a set time: checks pass with ``expires_at`` until then."""

    def __init__(self, config: BackendConfig, clock: FakeClock, expires_at: float) -> None:
        super().__init__(config, clock=clock)
        self._clock = clock
        self.expires_at = expires_at
        self.checks: list[float] = []

    async def check_credentials(self) -> CredentialStatus:
        self.checks.append(self._clock.now())
        if self._clock.now() >= self.expires_at:
            return CredentialStatus(ok=False, message="OAuth token expired")
        return CredentialStatus(ok=True, message="OAuth token", expires_at=self.expires_at)


async def test_credential_expiring_at_11_02_is_alerted_before_it_expires(
    pulse_settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    config = pulse_settings.backends[0]
    expiring = ExpiringBackend(config, clock, expires_at=at("11:02"))
    pulse = make_pulse(pulse_settings, {config.name: expiring})

    await pulse.advance_to(at("12:00"))

    assert len(expiring.checks) == 25  # every pulse checked it
    alerts = [m for m in await store.outbox_all() if m.dedupe_key.startswith("alert:credential-expiry")]
    assert len(alerts) == 1, [a.text for a in alerts]  # one alert per credential and expiry, not one per pulse
    alert = alerts[0]
    assert alert.urgent and "11:02" in alert.text
    # Warned at the first pulse inside the 2-hour window (09:30), well before 11:02.
    assert alert.created_at == at("09:30") < at("11:02")
    failed = [m for m in await store.outbox_all() if m.dedupe_key.startswith("alert:credential-failed")]
    assert [m.created_at for m in failed] == [at("11:30")]  # after expiry: one alert that the check fails


async def test_disabled_backend_is_re_enabled_and_recovery_announced_once(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    name = settings.backends[0].name
    assert await store.disable_backend(name, "auth", "401 invalid x-api-key")
    woken: list[int] = []
    pulse = make_pulse(settings, sim_backends(settings, clock), wake=lambda: woken.append(1))

    report = await pulse.run_once()
    again = await pulse.run_once()

    assert report.recovered == [name] and again.recovered == []
    state = (await store.backend_states())[name]
    assert not state.disabled and state.pause_reason is None
    recovered = [m for m in await store.outbox_all() if m.dedupe_key.startswith(f"backend-recovered:{name}")]
    assert len(recovered) == 1 and "back" in recovered[0].text
    assert woken  # the engine is told at once, so queued work can use it again


class UncheckableBackend(SimBackend):
    """A CLI with a login nothing can check without running a job (codex with a ChatGPT login)."""

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=True, checked=False, message="ChatGPT login, not checked")


async def test_a_check_that_checked_nothing_never_re_enables_a_backend(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    """Issue 14: a credential check that never called the server switched a backend disabled by a 401 back on."""
    name = settings.backends[0].name
    assert await store.disable_backend(name, "auth", "401 Incorrect API key provided")
    backends = {c.name: (UncheckableBackend if c.name == name else SimBackend)(c, clock=clock)
                for c in settings.backends}
    report = await make_pulse(settings, backends).run_once()
    assert name not in report.recovered
    assert (await store.backend_states())[name].disabled
    assert not [m for m in await store.outbox_all() if name in m.dedupe_key]  # neither "back" nor "failed"


async def _seed_job(store: Store, clock: FakeClock, settings: Settings, **spec: Any) -> int:
    from engine.job_factory import new_job

    job, _ = await store.enqueue(new_job(settings, type=spec.get("type", "analysis"), prompt=spec["prompt"]))
    state = spec["state"]
    if state == JobState.QUEUED:
        return job.id
    await store.transition(job.id, JobState.RUNNING, "seeded")
    attempts = [
        NewAttempt(backend=b, family="x", started_at=clock.now(), finished_at=clock.now(), outcome=outcome,
                   tokens_in=100, tokens_out=50, cost_usd=cost)
        for b, outcome, cost in spec.get("attempts", [])
    ]
    fields = {"last_failure_class": spec.get("failure"), "last_error": spec.get("error")}
    await store.complete(Completion(job_id=job.id, owner=None, to_state=state, reason="seeded",
                                    attempts=attempts, fields=fields))
    return job.id


async def test_digest_of_a_seeded_day_matches_the_database(
    pulse_settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    s = pulse_settings
    await _seed_job(store, clock, s, prompt="old job", state=JobState.DONE, attempts=[("sim-opus", "success", 5.0)])
    clock.set(at("08:00"))  # the day being digested starts after the old job
    done_ids = [
        await _seed_job(store, clock, s, prompt=f"summarise report {i}", state=JobState.DONE,
                        attempts=[("sim-sonnet", "success", 0.125 * (i + 1))])
        for i in range(5)
    ]
    failed_id = await _seed_job(
        store, clock, s, prompt="scrape the paywalled site", state=JobState.FAILED,
        attempts=[("sim-sonnet", "rate_limited", 0.0), ("sim-kimi", "bad_request", 0.01)],
        failure="bad_request", error="400 the request was malformed",
    )
    asking_id = await _seed_job(store, clock, s, prompt="pick a database", state=JobState.NEEDS_INPUT,
                                attempts=[("sim-opus", "success", 0.2)])
    human_id = await _seed_job(store, clock, s, prompt="draft the essay", state=JobState.NEEDS_HUMAN,
                               attempts=[("sim-opus", "success", 0.3)])
    await _seed_job(store, clock, s, prompt="still waiting", state=JobState.QUEUED)
    clock.set(at("23:00"))  # quiet hours: one non-urgent message held, one urgent one not
    await store.add_outbox(NewOutbox(dedupe_key="n1", kind="info", text="fyi"))
    await store.add_outbox(NewOutbox(dedupe_key="u1", kind="alert", text="now!", urgent=True))
    clock.set(at("07:00", day=1))

    digest = await make_pulse(s).build_digest()

    since = clock.now() - DAY
    stats = await store.stats(since)
    total, done, failed, cost = sql(
        s, "SELECT COUNT(*), SUM(state = 'done'), SUM(state = 'failed'), SUM(cost_usd) FROM jobs WHERE created_at >= ?",
        (since,),
    )[0]
    assert (total, done, failed) == (9, 5, 1)
    assert digest.numbers["total_jobs"] == stats.total_jobs == total
    assert digest.numbers["done"] == stats.done == done
    assert digest.numbers["failed"] == stats.failed == failed
    assert digest.numbers["cost_usd"] == pytest.approx(stats.cost_usd) == pytest.approx(cost)
    assert cost == pytest.approx(0.125 * 15 + 0.01 + 0.2 + 0.3)
    assert f"Ran: {total} jobs. Done: {done}. Failed: {failed}. Still open: 3." in digest.text
    assert f"Cost: ${cost:.2f}." in digest.text
    assert sorted(r["id"] for r in digest.numbers["done_jobs"]) == done_ids
    assert f"#{failed_id} analysis" in digest.text and "bad_request: 400 the request was malformed" in digest.text
    assert digest.numbers["failure_classes"] == {"bad_request": 1}
    assert f"#{asking_id} " in digest.text and "/answer" in digest.text
    assert f"#{human_id} " in digest.text and "/approve" in digest.text
    calls = {r["backend"]: (r["calls"], r["ok"]) for r in digest.numbers["backends"]}
    per_backend = "SELECT backend, COUNT(*), SUM(outcome = 'success') FROM attempts WHERE started_at >= ? GROUP BY 1"
    assert calls == {b: (n, ok) for b, n, ok in sql(s, per_backend, (since,))}
    assert "old job" not in digest.text
    assert digest.numbers["held_messages"] == 1
    assert "Held during quiet hours: 1 non-urgent message(s)." in digest.text


async def test_quiet_hours_hold_non_urgent_messages(pulse_settings: Settings, store: Store, clock: FakeClock) -> None:
    window, tz = pulse_settings.pulse.quiet_hours, zone(pulse_settings.pulse.timezone)
    assert not in_quiet_hours(window, at("21:59"), tz)
    assert in_quiet_hours(window, at("22:00"), tz) and in_quiet_hours(window, at("06:59", day=1), tz)
    assert not in_quiet_hours(window, at("07:00", day=1), tz)
    clock.set(at("23:00"))
    await store.add_outbox(NewOutbox(dedupe_key="later", kind="info", text="job done"))
    await store.add_outbox(NewOutbox(dedupe_key="now", kind="alert", text="token expires", urgent=True))
    # What a channel does: during quiet hours it asks only for urgent messages; the rest stay pending.
    due = await store.outbox_due(include_non_urgent=not in_quiet_hours(window, clock.now(), tz))
    assert [m.dedupe_key for m in due] == ["now"]
    clock.set(at("07:00", day=1))
    due = await store.outbox_due(include_non_urgent=not in_quiet_hours(window, clock.now(), tz))
    assert sorted(m.dedupe_key for m in due) == ["later", "now"]


async def test_project_advancement_enqueues_once_per_idle_period(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    project = await Control(settings, store, clock).add_project("thesis", goal="a literature review")
    assert (settings.home / "projects" / "thesis").is_dir()
    pulse = make_pulse(settings)
    await pulse.advance_to(at("11:59"))
    assert await store.list_jobs() == []  # not idle long enough (12 h by default)

    await pulse.advance_to(at("12:00"))
    [job] = await store.list_jobs()
    assert (job.source, job.project, job.created_at) == (Source.PULSE, "thesis", at("12:00"))
    assert "a literature review" in job.prompt
    assert job.idempotency_key == f"project:{project.id}:{int(START)}"
    assert (await store.get_project("thesis")).last_advanced_at == at("12:00")
    assert any("Project thesis" in m.text for m in await store.outbox_all())

    # The step is still open the next day: nothing piles up even though the project is idle again.
    await pulse.advance_to(at("12:30", day=1))
    assert len(await store.list_jobs()) == 1
    await store.transition(job.id, JobState.CANCELLED, "test: done with it")
    await pulse.run_once()
    await pulse.run_once()
    jobs = await store.list_jobs()
    assert len(jobs) == 2 and jobs[0].created_at == at("12:30", day=1)


async def test_pulse_failures_are_alerted_not_silent(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    async def broken_memory() -> str | None:
        raise RuntimeError("lance table locked")

    report = await make_pulse(settings, maintain_memory=broken_memory).run_once()
    assert report.failures == ["memory"]
    [alert] = [m for m in await store.outbox_all() if m.dedupe_key.startswith("alert:pulse-failure:memory")]
    assert alert.urgent and "lance table locked" in alert.text
    # The other steps still ran.
    assert report.health["queue_depth"] == 0 and "disk_free_bytes" in report.health


async def test_memory_maintenance_runs_at_most_every_six_hours(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    runs: list[float] = []

    async def maintain() -> str:
        runs.append(clock.now())
        return "optimized"

    await make_pulse(settings, maintain_memory=maintain).advance_to(START + DAY - 1)
    assert runs == [START + h * 3600 for h in (0, 6, 12, 18)]


class AskingBackend(SimBackend):
    """First run: writes question.md and ends its session 'sess-1'. Later runs: answer, in the same session."""

    def __init__(self, config: BackendConfig, clock: FakeClock, home: Any) -> None:
        super().__init__(config, clock=clock)
        self.home = home
        self.requests: list[BackendRequest] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.requests.append(request)
        if len(self.requests) == 1:
            folder = self.home / "jobs" / str(request.job_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "question.md").write_text("PostgreSQL or SQLite for the cache?\n")
            return BackendResult(text="I need a decision first.", session_id="sess-1")
        return BackendResult(text="Done with SQLite as you said.", session_id=request.session_id)


async def test_question_needs_input_answer_requeues_with_the_same_session(
    make_settings: Callable[..., Settings], clock: FakeClock, make_engine: Any, eventually: Any
) -> None:
    settings = make_settings(backends=instant(
        [BackendConfig(name="asker", kind="claude_cli", family="anthropic", tier=2, model="asker")]))
    store = await Store.open(settings.db_path, clock)
    try:
        backend = AskingBackend(settings.backends[0], clock, settings.home)
        engine = await make_engine(settings, store, clock, {"asker": backend})
        control = Control(settings, store, clock, engine)
        job, _ = await control.add_job("Set up the cache layer", type="analysis")

        async def waiting() -> Any:
            found = await store.get_job(job.id)
            return found if found.state == JobState.NEEDS_INPUT else None

        asked = await eventually(waiting)
        assert asked.session_id == "sess-1"
        [question] = [m for m in await store.outbox_all() if m.kind == "question"]
        assert question.urgent and question.payload == {"job_id": job.id, "kind": "question"}
        assert "PostgreSQL or SQLite" in question.text and f"/answer {job.id}" in question.text
        with pytest.raises(ValueError):
            await control.answer(job.id, "   ")

        await control.answer(job.id, "SQLite, keep it simple.")

        async def finished() -> Any:
            found = await store.get_job(job.id)
            return found if found.state == JobState.DONE else None

        done = await eventually(finished)
        resumed = backend.requests[1]
        assert resumed.session_id == "sess-1"
        assert "Operator's answer:\nSQLite, keep it simple." in resumed.prompt
        assert "PostgreSQL or SQLite for the cache?" in resumed.prompt
        assert done.session_id == "sess-1"
        transitions = [(e.from_state, e.to_state) for e in await store.job_events(job.id) if e.kind == "transition"]
        assert ("running", "needs_input") in transitions and ("needs_input", "queued") in transitions
        with pytest.raises(ValueError, match="only a job that asked"):
            await control.answer(job.id, "again")
    finally:
        await engine.stop(grace_s=0)
        await store.close()


async def test_enqueued_schedule_job_is_a_normal_job(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    """The scheduler only enqueues: what it writes is an ordinary queued job the engine will claim."""
    await Control(settings, store, clock).add_schedule("t", "triage inbox", type="triage", every="30m")
    await make_pulse(settings).advance_to(at("00:30"))
    [job] = await store.list_jobs()
    assert job.state == JobState.QUEUED and job.tier == settings.job_type("triage").tier
    assert job.source == Source.SCHEDULE and job.run_after == at("00:30")


async def test_a_summary_event_that_cannot_be_written_is_logged(
    settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def memory_then_database_gone() -> str | None:  # the last step; the summary is written after it
        await store.close()
        return None

    report = await make_pulse(settings, maintain_memory=memory_then_database_gone).run_once()
    assert report.failures == []
    [record] = [r for r in caplog.records if "summary event" in r.getMessage()]
    assert record.levelname == "WARNING" and "database is not open" in record.getMessage()


async def test_stats_and_digest_count_the_operators_jobs_not_chat_turns_or_reviews(
    pulse_settings: Settings, store: Store, clock: FakeClock, make_pulse: Callable[..., Pulse]
) -> None:
    """Issue 14: three jobs, a chat turn and a review read as 5 jobs at $0.022 each; they are 3 at $0.037."""
    s = pulse_settings
    clock.set(at("08:00"))
    for i, cost in enumerate((0.03, 0.04, 0.031)):
        await _seed_job(store, clock, s, prompt=f"summarise report {i}", state=JobState.DONE,
                        attempts=[("sim-sonnet", "success", cost)])
    await _seed_job(store, clock, s, type="chat", prompt="hello there", state=JobState.DONE,
                    attempts=[("sim-haiku", "success", 0.004)])
    await _seed_job(store, clock, s, type="review", prompt="review of #1", state=JobState.DONE,
                    attempts=[("sim-gpt", "success", 0.006)])
    clock.set(at("07:00", day=1))

    stats = await store.stats(clock.now() - DAY, [b.name for b in s.backends if b.simulated])
    assert (stats.total_jobs, stats.done, stats.chat_turns, stats.review_jobs) == (3, 3, 1, 1)
    assert stats.cost_usd == pytest.approx(0.111) and stats.cost_per_job == pytest.approx(0.037)
    assert stats.simulated_cost_usd == pytest.approx(0.111)
    text = render.stats_text(stats)
    assert "jobs 3 · done 3" in text and "$0.0370 per job · $0.11 of it simulated" in text
    assert "chat turns 1 ($0.00) · reviews 1 ($0.01)" in text

    digest = await make_pulse(s).build_digest()
    assert "Ran: 3 jobs. Done: 3." in digest.text
    assert "Also in the cost: 1 chat turn(s) ($0.00) and 1 review(s) ($0.01)." in digest.text
    assert "Of the cost, $0.11 is simulated (sim backends), not real money." in digest.text
    assert len(digest.numbers["done_jobs"]) == 3
