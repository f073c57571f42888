"""The real ``claude`` CLI (pinned) reports subscription usage windows, and the backend hands them to the engine.

A subscription login (an OAuth token) against tests/fakes/fake_anthropic.py answering with the
``anthropic-ratelimit-unified-*`` headers the real API sends: the CLI prints a ``rate_limit_event`` and the run's
``BackendResult.windows`` carries each window. With an API key the same answer reports no window ("window unknown").
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.quota import WindowReport, WindowStatus
from tests.fakes.fake_anthropic import FakeAnthropic, Reply
from tests.integration.test_claude_cli import _claude_binary, backend, cli_env, request

# The CLI drops a window whose reset is already past or further than the window's length: a few hours ahead.
FIVE_HOUR_RESET = int(time.time()) + 2 * 3600
WEEK_RESET = FIVE_HOUR_RESET + 3 * 86_400
HEADERS = {
    "anthropic-ratelimit-unified-status": "allowed_warning",
    "anthropic-ratelimit-unified-reset": str(FIVE_HOUR_RESET),
    "anthropic-ratelimit-unified-representative-claim": "five_hour",
    "anthropic-ratelimit-unified-5h-status": "allowed_warning",
    "anthropic-ratelimit-unified-5h-reset": str(FIVE_HOUR_RESET),
    "anthropic-ratelimit-unified-5h-utilization": "0.82",
    "anthropic-ratelimit-unified-5h-surpassed-threshold": "0.75",
    "anthropic-ratelimit-unified-7d-status": "allowed",
    "anthropic-ratelimit-unified-7d-reset": str(WEEK_RESET),
    "anthropic-ratelimit-unified-7d-utilization": "0.31",
}


@pytest.mark.parametrize("login", ["oauth", "api_key"])
async def test_the_cli_reports_windows_only_for_a_subscription_login(login: str, tmp_path: Path) -> None:
    binary = _claude_binary()
    workspace = tmp_path / "job"
    workspace.mkdir()
    with FakeAnthropic() as fake:
        fake.script(Reply("Done.", headers=HEADERS))
        env = cli_env(tmp_path, fake, key=None if login == "oauth" else "x")
        if login == "oauth":
            env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-fake-token"
        result = await backend(binary, env, subscription=login == "oauth").run(request(workspace))
    assert result.ok and result.text == "Done."
    if login == "api_key":
        assert result.windows == []
        return
    assert result.cost_usd == 0.0  # a subscription costs nothing per call
    assert {r.kind: r for r in result.windows} == {
        "five_hour": WindowReport(kind="five_hour", status=WindowStatus.WARNING, resets_at=FIVE_HOUR_RESET,
                                  utilization=0.82),
        "seven_day": WindowReport(kind="seven_day", status=WindowStatus.ALLOWED, resets_at=WEEK_RESET,
                                  utilization=0.31),
    }
