"""The codex_cli backend driving the REAL pinned Codex CLI (``@openai/codex@0.169.0``) against a local Responses API.

Each run is a real ``codex exec --json`` process talking HTTP to tests/fakes/fake_responses.py on 127.0.0.1,
through the provider the backend defines (retries off), in the worker sandbox. The cases are the ones that broke
against the real binary: a run the CLI recovered itself, a hard 429, a bad key, a resumed thread whose usage is a
running total, and the credential check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest, Usage
from engine.backends.codex_cli import CodexCliBackend
from engine.backends.sim import SimBackend
from engine.clock import SystemClock
from engine.failures import FailureClass
from engine.models import Job, JobState, NewJob
from engine.settings import BackendConfig, JobTypeConfig, SimProfile
from tests.fakes.fake_responses import Answer, FakeResponses, ResponsesError
from tests.processes import pinned_cli

KEY = "sk-test-codex-key"
PRICES = {"price_in_per_mtok": 1.25, "price_out_per_mtok": 10.0, "price_cache_read_per_mtok": 0.125}


def _codex_binary() -> str:
    return pinned_cli("SWITCHBOARD_CODEX_BIN", "codex")


@pytest.fixture
def fake():
    with FakeResponses(require_key=KEY) as server:
        yield server


def make(tmp_path: Path, fake: FakeResponses, *, key: str = KEY,
         extra_args: list[str] | None = None) -> CodexCliBackend:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex"), "CODEX_KEY": key}
    config = BackendConfig(name="codex", kind="codex_cli", model="gpt-fake-codex", family="openai",
                           binary=_codex_binary(), base_url=f"{fake.url}/v1", api_key_env="CODEX_KEY",
                           extra_args=extra_args or [], **PRICES)  # type: ignore[arg-type]
    return CodexCliBackend(config, clock=SystemClock(), env=env)


def request(tmp_path: Path, **kw: object) -> BackendRequest:
    workspace = tmp_path / "job"
    workspace.mkdir(exist_ok=True)
    fields: dict[str, object] = {"job_id": 1, "job_type": "chat", "prompt": "Say hello.", "workspace": workspace,
                                 "timeout_s": 60.0, "permission_mode": "default"}
    fields.update(kw)
    return BackendRequest(**fields)  # type: ignore[arg-type]


async def test_success_text_usage_cost_and_no_retries_of_its_own(tmp_path, fake):
    fake.script(Answer("Hello there.", input_tokens=1000, cached_tokens=200, output_tokens=50))
    result = await make(tmp_path, fake).run(request(tmp_path))
    assert result.ok, result.failure
    assert result.text == "Hello there." and result.session_id
    assert result.usage == Usage(input_tokens=800, output_tokens=50, cache_read_tokens=200)
    assert result.cost_usd == pytest.approx((800 * 1.25 + 50 * 10.0 + 200 * 0.125) / 1e6)
    calls = fake.model_calls()
    assert len(calls) == 1 and calls[0].headers["originator"] == "codex_exec"
    assert "codex_exec/0.169.0" in calls[0].headers["user-agent"]


async def test_a_run_the_cli_recovered_is_a_success_with_one_cost(tmp_path, fake):
    """Why #1: its own retry printed "Reconnecting... 1/2 (... 429 ...)", then the turn completed."""
    fake.script(ResponsesError.rate_limited(retry_after=0), Answer("Recovered."))
    # Its own stream retries back on for this case only: the engine's default turns them off.
    backend = make(tmp_path, fake, extra_args=["-c", "model_providers.switchboard.stream_max_retries=2"])
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    result = await backend.run(request(tmp_path), progress)
    assert any("Reconnecting" in line for line in lines), lines
    assert result.ok, result.failure
    assert result.text == "Recovered." and result.usage.output_tokens == 50
    assert len(fake.model_calls()) == 2


async def test_hard_429_comes_back_at_once_as_rate_limited(tmp_path, fake):
    """Why #3: with the CLI's retries off, one request, and the engine decides."""
    fake.default = ResponsesError.rate_limited(retry_after=37)
    before = SystemClock().now()
    result = await make(tmp_path, fake).run(request(tmp_path))
    assert result.failure is not None and result.failure.failure_class is FailureClass.RATE_LIMITED
    # The pause comes from the server's retry-after (read from the CLI's own log), not the 60 s default.
    assert result.failure.resume_at is not None and before + 36 <= result.failure.resume_at <= before + 45
    assert len(fake.model_calls()) == 1


async def test_bad_key_is_auth_and_never_echoed(tmp_path, fake):
    result = await make(tmp_path, fake, key="sk-wrong-key-123").run(request(tmp_path))
    assert result.failure is not None and result.failure.failure_class is FailureClass.AUTH
    assert "sk-wrong-key-123" not in result.failure.message
    assert len(fake.model_calls()) == 1


async def test_resumed_thread_reports_running_totals_and_the_run_counts_its_own(tmp_path, fake):
    """Why #2: on ``codex exec resume`` turn.completed carries the thread's running total."""
    backend = make(tmp_path, fake)
    fake.script(Answer("one", input_tokens=1000, cached_tokens=0, output_tokens=50),
                Answer("two", input_tokens=1500, cached_tokens=0, output_tokens=70))
    first = await backend.run(request(tmp_path))
    assert first.ok and first.session_total == Usage(input_tokens=1000, output_tokens=50)
    second = await backend.run(request(tmp_path, session_id=first.session_id, session_usage=first.session_total))
    assert second.ok, second.failure
    assert second.session_id == first.session_id
    assert second.session_total == Usage(input_tokens=2500, output_tokens=120)  # what the CLI printed
    assert second.usage == Usage(input_tokens=1500, output_tokens=70)  # what this run cost
    assert second.cost_usd == pytest.approx((1500 * 1.25 + 70 * 10.0) / 1e6)


async def test_credential_check_asks_the_server(tmp_path, fake):
    """Why #4: a key the server refuses fails the check; a good one passes it."""
    good = await make(tmp_path, fake).check_credentials()
    bad = await make(tmp_path, fake, key="sk-revoked").check_credentials()
    assert good.ok and good.checked and "0.169.0" in good.message
    assert not bad.ok and "sk-revoked" not in bad.message
    assert fake.count("/v1/models", "GET") == 2


async def test_a_job_revised_twice_records_each_turn_once(tmp_path, fake, make_settings, store, clock, make_engine,
                                                         eventually):
    """Why #2 end to end: the engine keeps the thread's running total and passes it back on each resume, so the
    maker's attempts add up to what the server billed, not 1x + 2x + 3x of it."""
    codex = make(tmp_path, fake)
    reviewer = BackendConfig(name="sim-rev", kind="sim", model="sim-rev", family="google",
                             sim=SimProfile(latency_ms=0.0, review_score=3.0))
    settings = make_settings(backends=[codex.config, reviewer], routing={"analysis": ["codex"], "review": ["sim-rev"]},
                             job_types={"analysis": JobTypeConfig(review=True, max_revisions=2)})
    fake.script(*(Answer(f"draft {i}", input_tokens=1000 * i, cached_tokens=0, output_tokens=10 * i)
                  for i in (1, 2, 3)))
    engine = await make_engine(settings, store, clock,
                               backends={"codex": codex, "sim-rev": SimBackend(reviewer, clock=clock)})
    job, _ = await engine.submit(NewJob(type="analysis", prompt="compare the designs", tier=2, max_attempts=3,
                                        max_revisions=2, review_required=True))

    async def handed_over() -> Job | None:
        current = await store.get_job(job.id)
        return current if current is not None and current.state is JobState.NEEDS_HUMAN else None

    final = await eventually(handed_over, timeout_s=120)
    made = [a for a in await store.job_attempts(job.id) if a.backend == "codex"]
    assert [a.outcome for a in made] == ["success"] * 3
    assert [(a.tokens_in, a.tokens_out) for a in made] == [(1000, 10), (2000, 20), (3000, 30)]
    assert len(fake.model_calls()) == 3
    expected = (6000 * 1.25 + 60 * 10.0) / 1e6
    assert sum(a.cost_usd for a in made) == pytest.approx(expected)
    assert final.tokens_in >= 6000 and final.cost_usd == pytest.approx(expected, abs=1e-3)


async def test_a_chatgpt_login_is_reported_not_checked(tmp_path):
    """Why #4: without an API key nothing cheap can be asked; the check says so instead of passing."""
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text("{}")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex")}
    config = BackendConfig(name="codex", kind="codex_cli", model="gpt-fake-codex", family="openai",
                           binary=_codex_binary())
    status = await CodexCliBackend(config, clock=SystemClock(), env=env).check_credentials()
    assert status.ok and not status.checked and "not checked" in status.message
