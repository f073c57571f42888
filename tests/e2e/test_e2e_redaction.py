"""End to end: `switchboard run --no-console` as a subprocess, the HTTP fake Bot API, a fake OpenAI-compatible
model that leaks secrets into its answer. The composition root builds the redactor from the configuration and
installs the log filter; nothing the model leaked reaches Telegram (messages or the result document), the data
folder (database, WAL, result.md) or the process's log output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.configs import sim_backends_toml
from tests.e2e.telegram_rig import OPERATOR, Switchboard
from tests.fakes.fake_openai import Completion, FakeOpenAI
from tests.fakes.fake_telegram import FakeTelegram

LEAKY_KEY = "lk7e6d5c4b3a291807f6e5d4c3b2a1908abcd"  # the leaky backend's own key, configured by name
WEBHOOK_SECRET = "e2e-webhook-secret-0042"
STRANGER_TOKEN = "6660001112:AAG" + "Zq9" * 15  # a Telegram token nobody configured


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def _config(tmp_path: Path, fake: FakeTelegram, model: FakeOpenAI) -> Path:
    lines = [
        "[telegram]", f"operator_ids = [{OPERATOR}]", f'api_base_url = "{fake.base_url.removesuffix("/bot")}"',
        "progress_edit_interval_s = 60", "", "[memory]", "enabled = false", "",
        "[routing]", 'research = ["leaky"]', "",
        "[[backends]]", 'name = "leaky"', 'kind = "openai"', 'model = "gpt-fake-1"', 'family = "deepseek"',
        "tier = 3", f'base_url = "{model.url}/v1"', 'api_key_env = "SB_E2E_LEAKY_KEY"', "",
    ]
    lines += sim_backends_toml([("sim-opus", "anthropic", 3, 20.0), ("sim-sonnet", "anthropic", 2, 20.0),
                                ("sim-gpt", "openai", 3, 20.0)])
    path = tmp_path / "switchboard.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


async def test_leaked_secrets_reach_no_exit_of_the_running_process(
    tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = [LEAKY_KEY, WEBHOOK_SECRET, STRANGER_TOKEN, fake.token]
    leak = (f"Findings. My key is {LEAKY_KEY}; the bot token {fake.token}; webhook {WEBHOOK_SECRET}; "
            f"found {STRANGER_TOKEN}.\n\n" + "\n".join(f"finding {i}: use WAL mode" for i in range(300)))
    monkeypatch.setenv("SB_E2E_LEAKY_KEY", LEAKY_KEY)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with FakeOpenAI(Completion(text=leak), require_key=LEAKY_KEY) as model:
        switchboard = Switchboard(tmp_path, _config(tmp_path, fake, model), fake.token)
        await switchboard.start()
        try:
            await fake.wait_for_calls("getUpdates", 1, timeout_s=30)
            fake.operator_sends_text(OPERATOR, OPERATOR, "research the best SQLite settings")
            await fake.wait_for(lambda: any(" done: " in m.text for m in fake.sent), 60, "the result")
            await fake.wait_for(lambda: fake.sent_documents, 30, "the result as a document")
            assert model.completion_calls()  # the leaky model did the work
            code = await switchboard.terminate()
        finally:
            await switchboard.ensure_stopped()
    stderr = switchboard.stderr.decode(errors="replace")
    assert code == 0, stderr
    [document] = fake.sent_documents
    assert document.file is not None and b"finding 299: use WAL mode" in document.file.content
    [result] = switchboard.query("SELECT result_text, result_path FROM jobs WHERE type = 'research'")
    assert result["result_text"].startswith("Findings. My key is ***") and result["result_path"]
    sent = "\n".join(m.source for m in fake.sent)
    files = {p: p.read_bytes() for p in switchboard.home.rglob("*") if p.is_file()}
    assert Path(result["result_path"]) in files
    for secret in secrets:
        assert secret not in sent and secret.encode() not in document.file.content
        assert secret not in stderr
        leaked = [str(p) for p, data in files.items() if secret.encode() in data]
        assert not leaked, f"{secret[:12]}... in {leaked}"


