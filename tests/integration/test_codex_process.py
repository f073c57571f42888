"""The codex_cli backend's process handling, with a stand-in ``codex`` script (no real codex runs here).

The script prints JSONL shaped like ``codex exec --json`` and records its argv, so this proves the command
line, the line-by-line parsing through a real pipe, progress calls, the timeout kill and cancellation.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from engine.backends.base import BackendRequest
from engine.backends.codex_cli import CodexCliBackend
from engine.clock import FakeClock
from engine.failures import FailureClass
from engine.settings import BackendConfig
from tests.processes import processes_in, worker_python

SCRIPT = """#!{python}
import json, os, sys, time
with open(os.environ["ARGV_LOG"], "w") as f:
    json.dump(sys.argv[1:], f)
mode = os.environ.get("FAKE_MODE", "ok")
def emit(event):
    print(json.dumps(event), flush=True)
emit({{"type": "thread.started", "thread_id": "thread-123"}})
emit({{"type": "turn.started"}})
if mode == "hang":
    time.sleep(60)
emit({{"type": "item.completed", "item": {{"id": "i1", "type": "agent_message", "text": "All done."}}}})
emit({{"type": "turn.completed", "usage": {{"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 9}}}})
"""


@pytest.fixture
def fake_codex(tmp_path: Path) -> Path:
    path = tmp_path / "codex"
    path.write_text(SCRIPT.format(python=worker_python()))
    path.chmod(0o755)
    return path


def make(fake_codex: Path, tmp_path: Path, mode: str = "ok") -> CodexCliBackend:
    # The worker writes only inside its job folder (``ws``); its test variables reach it through the passthrough.
    env = {"PATH": os.environ["PATH"], "ARGV_LOG": str(tmp_path / "ws" / "argv.json"), "FAKE_MODE": mode,
           "HOME": str(tmp_path)}
    config = BackendConfig(name="codex", kind="codex_cli", model="gpt-5-codex", family="openai",
                           binary=str(fake_codex), env_passthrough=["ARGV_LOG", "FAKE_MODE"])
    return CodexCliBackend(config, clock=FakeClock(), env=env)


def request(tmp_path: Path, **kw: object) -> BackendRequest:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    fields: dict[str, object] = {"job_id": 1, "job_type": "coding", "prompt": "do it", "workspace": workspace,
                                 "timeout_s": 10.0}
    fields.update(kw)
    return BackendRequest(**fields)  # type: ignore[arg-type]


async def test_success_through_a_real_pipe(fake_codex, tmp_path):
    seen: list[str] = []

    async def progress(line: str) -> None:
        seen.append(line)

    result = await make(fake_codex, tmp_path).run(request(tmp_path, session_id="thread-0"), progress)
    assert result.ok, result.failure
    assert result.text == "All done." and result.session_id == "thread-123"
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (60, 40)
    assert seen == ["started", "turn.started", "All done.", "turn completed"]
    argv = json.loads((tmp_path / "ws" / "argv.json").read_text())
    assert argv[:2] == ["exec", "--json"] and argv[-4:] == ["resume", "thread-0", "--", "do it"]


async def test_hang_is_killed_as_timeout(fake_codex, tmp_path):
    result = await make(fake_codex, tmp_path, mode="hang").run(request(tmp_path, timeout_s=0.5))
    assert result.failure is not None and result.failure.failure_class == FailureClass.TIMEOUT
    assert result.session_id == "thread-123"


async def test_cancel_stops_the_process(fake_codex, tmp_path):
    task = asyncio.create_task(make(fake_codex, tmp_path, mode="hang").run(request(tmp_path)))
    for _ in range(200):
        if (tmp_path / "ws" / "argv.json").exists():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_in(tmp_path / "ws") == []
