"""Redaction at every exit, driven through the real engine: a worker prints configured secrets and a Telegram
token into its result and its failure messages, and they must appear nowhere it goes: the database file, the
job folder (result.md), the outbox, the review prompt another vendor receives, and the logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback
from engine.clock import FakeClock
from engine.failures import Failure, FailureClass
from engine.job_factory import new_job
from engine.loop import Engine
from engine.models import JobState
from engine.redaction import MASK, redacting_logs
from engine.settings import BackendConfig, Settings
from engine.store import Store

# Configured secrets, masked by value: nothing in their shape says "key".
MAKER_KEY = "mk9f8e7d6c5b4a39281706f5e4d3c2b1a0ffee"
OTHER_KEY = "ok1a2b3c4d5e6f70819a2b3c4d5e6f7081beef"
WEBHOOK_SECRET = "wh-5ecret-0f-the-webhook-2026"
EMBEDDER_KEY = "emb0123456789abcdef0123456789abcdef"
TELEGRAM_TOKEN = "7123456789:AAH" + "x" * 43  # longer than the 35 characters the old pattern knew
# Not configured anywhere: masked by its shape alone.
STRANGER_TOKEN = "5550001112:AAG" + "Zq9" * 9
SECRETS = [MAKER_KEY, OTHER_KEY, WEBHOOK_SECRET, EMBEDDER_KEY, TELEGRAM_TOKEN, STRANGER_TOKEN]


class Worker:
    """A fake model of the outside boundary: returns each of ``results`` in turn and keeps every request."""

    def __init__(self, config: BackendConfig, results: list[BackendResult] | Callable[[], BackendResult]) -> None:
        self.config = config
        self.results = results
        self.requests: list[BackendRequest] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.requests.append(request)
        if request.workspace is not None:  # a CLI worker writes its own result.md, as worker_context.md asks
            (request.workspace / "result.md").write_text(f"# Result\n\n{leaky_result()[:300]}\n", encoding="utf-8")
        if callable(self.results):
            return self.results()
        return self.results[min(len(self.requests), len(self.results)) - 1]

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=True)

    async def aclose(self) -> None:
        return None


def leaky_result() -> str:
    dump = "\n".join(f"OPENAI_API_KEY={OTHER_KEY}" if i % 50 == 0 else f"line {i} of the report" for i in range(400))
    return (
        f"Done. For the record my key is {MAKER_KEY}, the bot token is {TELEGRAM_TOKEN}, the webhook secret "
        f"{WEBHOOK_SECRET}, the embedder key {EMBEDDER_KEY}, and I found {STRANGER_TOKEN} too.\n\n{dump}"
    )


def crash() -> BackendResult:
    raise RuntimeError(f"bug while calling https://api.example.com/v1?key={OTHER_KEY} with {TELEGRAM_TOKEN}")


def verdict(score: float) -> str:
    return (
        '{"criteria": [{"name": "task_fit", "critique": "fine", "score": 8}], "overall_critique": "ok", '
        f'"score": {score}, "verdict": "pass"}}'
    )


def every_file(home: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in home.rglob("*") if path.is_file()}


async def test_secrets_a_worker_prints_appear_at_no_exit(
    make_settings: Callable[..., Settings],
    store: Store,
    clock: FakeClock,
    eventually: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SB_TEST_MAKER_KEY", MAKER_KEY)
    monkeypatch.setenv("SB_TEST_OTHER_KEY", OTHER_KEY)
    monkeypatch.setenv("SB_TEST_EMBEDDER_KEY", EMBEDDER_KEY)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    flaky = Worker(
        BackendConfig(name="flaky", kind="openai", model="m", family="anthropic", api_key_env="SB_TEST_OTHER_KEY"),
        [BackendResult(failure=Failure(failure_class=FailureClass.SERVER_ERROR,
                                       message=f"HTTP 500: upstream echoed {OTHER_KEY} and {STRANGER_TOKEN}",
                                       signature="http_500"))],
    )
    maker = Worker(
        BackendConfig(name="maker", kind="claude_cli", model="m", family="anthropic", api_key_env="SB_TEST_MAKER_KEY"),
        [BackendResult(text=leaky_result(), model="m")],
    )
    reviewer = Worker(BackendConfig(name="reviewer", kind="openai", model="r", family="openai"),
                      [BackendResult(text=verdict(8), model="r")])
    broken = Worker(BackendConfig(name="broken", kind="openai", model="b", family="google"), crash)
    scribe = Worker(BackendConfig(name="scribe", kind="claude_cli", model="s", family="anthropic"),
                    [BackendResult(text="Short answer; the details are in result.md.", model="s")])
    settings = make_settings(
        backends=[flaky.config, maker.config, reviewer.config, broken.config, scribe.config],
        routing={"writing": ["flaky", "maker"], "review": ["reviewer"], "analysis": ["broken"], "triage": ["scribe"]},
        memory={"embedder_api_key_env": "SB_TEST_EMBEDDER_KEY"},
    )
    engine = Engine(settings, store, {w.config.name: w for w in (flaky, maker, reviewer, broken, scribe)}, clock)
    with caplog.at_level(logging.INFO), redacting_logs(engine.redactor):  # as the composition root installs it
        await engine.start()
        try:
            job, _ = await engine.submit(new_job(settings, type="writing", prompt="write the report", chat_id=42))
            bug, _ = await engine.submit(new_job(settings, type="analysis", prompt="analyse the numbers"))
            short, _ = await engine.submit(new_job(settings, type="triage", prompt="triage the inbox"))
            done = await eventually(lambda: _in_state(store, job.id, JobState.DONE), timeout_s=30)
            await eventually(lambda: _in_state(store, bug.id, JobState.FAILED), timeout_s=30)
            await eventually(lambda: _in_state(store, short.id, JobState.DONE), timeout_s=30)
            logging.getLogger("engine.test").warning("a worker said %s", leaky_result()[:400])
        finally:
            await engine.stop(grace_s=0)

    # The work itself survived, masked.
    assert done.result_text is not None and done.result_text.startswith(f"Done. For the record my key is {MASK}")
    assert done.result_path is not None and Path(done.result_path).name == "result.md"
    outbox = await store.outbox_all()
    assert any(m.kind == "job_done" and m.job_id == job.id for m in outbox)
    attempts = await store.job_attempts(job.id)
    assert [a.outcome for a in attempts] == ["server_error", "success"]
    assert any("crashed the runner" in r.getMessage() for r in caplog.records)
    # ... and no secret is anywhere it went.
    [review_request] = reviewer.requests
    places = {
        "the review prompt the reviewer received": review_request.prompt + review_request.system,
        "outbox rows": "\n".join(m.text + repr(m.payload) for m in outbox),
        "attempt errors": "\n".join(a.error or "" for a in attempts),
        "the logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
    }
    await store.close()  # every page on disk: the database file, its WAL, the job folders
    files = every_file(settings.home)
    assert settings.db_path in files and Path(done.result_path) in files
    places["result.md"] = files[Path(done.result_path)].decode("utf-8")
    assert MASK in places["result.md"] and "line 399 of the report" in places["result.md"]
    own = files[settings.home / "jobs" / str(short.id) / "result.md"].decode("utf-8")  # the worker's own file
    assert own.startswith(f"# Result\n\nDone. For the record my key is {MASK}")
    for secret in SECRETS:
        for where, text in places.items():
            assert secret not in text, f"{secret[:12]}... leaked into {where}"
        for path, data in files.items():
            assert secret.encode() not in data, f"{secret[:12]}... leaked into {path}"


async def _in_state(store: Store, job_id: int, state: JobState) -> object:
    job = await store.get_job(job_id)
    return job if job is not None and job.state == state else None
