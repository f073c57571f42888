"""The redactor: configured secrets by value, token and key patterns of any length, completions and models,
the backend wrapper and the log filter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback
from engine.failures import Failure, FailureClass
from engine.models import JobState, NewOutbox
from engine.redaction import MASK, RedactingFilter, Redactor, redact, redacting_logs
from engine.settings import BackendConfig, Settings
from engine.store import Completion, NewAttempt

# --- patterns -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "leak"), [
    ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
    ("x-api-key: sk-ant-api03-AAAAAAAAAAAAAAAAAAAA", "sk-ant-api03-AAAAAAAAAAAAAAAAAAAA"),
    ('{"api_key": "0123456789abcdef"}', "0123456789abcdef"),
    ("key AIzaSyA1234567890abcdefghijklmnopqrstu in url", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0/getMe",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"),
    # Telegram tokens of any length: shorter and longer than the 35 characters of today's tokens.
    ("TELEGRAM_BOT_TOKEN=7123456789:AAH" + "x" * 43, "AAH" + "x" * 43),
    ("bot 42:AAbcdefghijklmnopqrstu", "AAbcdefghijklmnopqrstu"),
    ("https://api.telegram.org/bot5550001112:AAG" + "Zq9" * 20 + "/sendMessage", "AAG" + "Zq9" * 20),
    ("OPENAI_API_KEY=sk-proj-" + "A1b2" * 30, "A1b2" * 30),
    ("https://maps.example.com/api?key=9f8e7d6c5b4a3928&q=x", "9f8e7d6c5b4a3928"),
    ("export GITHUB_TOKEN: github_pat_11ABCDEFG0123456789_abcdefghij", "github_pat_11ABCDEFG0123456789_abcdefghij"),
    ("password = hunter2hunter2", "hunter2hunter2"),
    ("client_secret=Zx81-longish-secret", "Zx81-longish-secret"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "dozjgNryP4J3jVmNHl0w5N"),
])
def test_redact_patterns(text: str, leak: str) -> None:
    assert leak not in redact(text)


def test_redact_given_secrets_and_leaves_ordinary_text() -> None:
    assert redact("the key is s3cr3t-value!", ["s3cr3t-value"]) == "the key is ***!"
    assert redact("plain words, nothing secret: x y z", ["x", None, ""]) == "plain words, nothing secret: x y z"
    assert redact("Bearer ***") == "Bearer ***"


@pytest.mark.parametrize("text", [
    "The key: idea is to cache the prompt prefix.",
    "Meeting at 12:30, job #1234 took 45 s; see https://example.com/page?id=12345",
    "ratio 3:1, version 2.0.1, token budget 2000000, secret sauce",
    "image sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 pulled",
    "engine/runner.py:212:record_attempt_for_the_run failed",
])
def test_ordinary_text_stays_as_it_is(text: str) -> None:
    assert redact(text) == text


def test_a_secret_containing_another_is_masked_whole() -> None:
    assert redact("abcd-efgh-ijkl", ["abcd", "abcd-efgh-ijkl"]) == MASK


# --- the Redactor from the configuration ---------------------------------------------------------------------


def _settings(tmp_path: Path) -> Settings:
    backends = [
        BackendConfig(name="a", kind="openai", model="m", family="openai", api_key_env="KEY_A"),
        BackendConfig(name="b", kind="anthropic", model="m", family="anthropic", api_key_env="KEY_B"),
        BackendConfig(name="c", kind="sim", family="sim"),
    ]
    return Settings(home=tmp_path, backends=backends, memory={"embedder_api_key_env": "KEY_EMBED"},
                    telegram={"webhook_secret_env": "HOOK"})


def test_redactor_knows_every_configured_secret(tmp_path: Path) -> None:
    environ = {"KEY_A": "alpha-key-value", "KEY_B": "beta-key-value", "KEY_EMBED": "embed-key-value",
               "HOOK": "hook-secret-value", "TELEGRAM_BOT_TOKEN": "1:tok", "UNRELATED": "not-a-secret-of-ours"}
    redactor = Redactor.from_settings(_settings(tmp_path), environ)
    assert set(redactor.secrets) == {"alpha-key-value", "beta-key-value", "embed-key-value", "hook-secret-value",
                                     "1:tok"}
    text = " ".join(environ.values())
    assert redactor(text) == f"{MASK} {MASK} {MASK} {MASK} {MASK} not-a-secret-of-ours"


def test_redactor_masks_every_string_of_a_completion_and_keeps_its_types() -> None:
    redactor = Redactor(("hush-hush-value",))
    completion = Completion(
        job_id=1, owner="me", to_state=JobState.DONE, reason="failed: hush-hush-value",
        fields={"result_text": "the key hush-hush-value", "cost_usd": 1.5, "nested": {"a": ["hush-hush-value"]}},
        attempts=[NewAttempt(backend="x", model="m", family="f", purpose="make", started_at=0, finished_at=1,
                             outcome="server_error", error="echo hush-hush-value")],
        outbox=[NewOutbox(dedupe_key="k", kind="info", text="hush-hush-value!", payload={"buttons": [["a", "b"]]})],
        assistant_message="hush-hush-value",
    )
    clean = redactor.model(completion)
    assert "hush-hush-value" not in clean.model_dump_json()
    assert clean.to_state is JobState.DONE and clean.fields["cost_usd"] == 1.5
    assert clean.outbox[0].text == f"{MASK}!" and clean.outbox[0].payload == {"buttons": [["a", "b"]]}
    assert completion.fields["result_text"] == "the key hush-hush-value"  # the original is left alone


# --- the backend wrapper -------------------------------------------------------------------------------------


class _Echo:
    config = BackendConfig(name="echo", kind="openai", model="m", family="f")

    def __init__(self) -> None:
        self.seen: list[BackendRequest] = []

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self.seen.append(request)
        if progress is not None:
            await progress(f"working with {request.prompt}")
        failure = Failure(failure_class=FailureClass.UNKNOWN, message="oops hush-hush-value")  # its own leak
        return BackendResult(text=f"echo {request.prompt}", failure=failure)

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=False, message="key hush-hush-value refused")

    async def aclose(self) -> None:
        return None


async def test_backend_traffic_is_redacted_both_ways() -> None:
    inner = _Echo()
    backend = Redactor(("hush-hush-value",)).backend(inner)
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    request = BackendRequest(job_id=1, job_type="review", system="sys hush-hush-value", prompt="hush-hush-value")
    result = await backend.run(request, progress)
    assert inner.seen[0].prompt == MASK and inner.seen[0].system == f"sys {MASK}"  # what the vendor receives
    assert result.text == f"echo {MASK}" and result.failure is not None and result.failure.message == f"oops {MASK}"
    assert lines == [f"working with {MASK}"]
    assert backend.config is inner.config
    assert "hush-hush-value" not in (await backend.check_credentials()).message


# --- logs ----------------------------------------------------------------------------------------------------


def test_log_filter_redacts_message_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor(("hush-hush-value",))
    log = logging.getLogger("engine.some.module")
    with caplog.at_level(logging.INFO), redacting_logs(redactor):
        log.info("calling %s with token %s", "https://x/bot123:AAbcdefghijklmnopqrstuvwx/getMe", "hush-hush-value")
        try:
            raise RuntimeError("failed with hush-hush-value")
        except RuntimeError:
            log.exception("it broke")
    log.warning("after: hush-hush-value")  # the filter is gone with its context
    assert "hush-hush-value" not in caplog.text.split("after:")[0]
    assert "AAbcdefghijklmnopqrstuvwx" not in caplog.text
    assert "it broke" in caplog.text and "RuntimeError: failed with ***" in caplog.text
    assert caplog.records[-1].getMessage() == "after: hush-hush-value"
    assert all(not isinstance(f, RedactingFilter) for h in logging.getLogger().handlers for f in h.filters)
