"""The worker sandbox against a hostile worker: a stand-in ``claude`` (configured through ``binary =`` on a
claude_cli backend) run by the real engine, that looks for secrets in its environment and in the engine's,
reads the database, another job's folder, core memory, the config file and the operator's home, writes outside
its folder and forges a passing review in the database, then reports what it found as its result.

With bubblewrap every attempt fails or finds nothing; with ``sandbox = "off"`` the environment part still holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_backends
from engine.backends.base import BackendRequest
from engine.backends.claude_cli import ClaudeCliBackend
from engine.clock import SystemClock
from engine.control import Control
from engine.loop import Engine
from engine.models import Job, JobState
from engine.sandbox import Sandbox, find_bubblewrap
from engine.settings import BackendConfig, load_settings
from engine.store import Store
from tests.fakes.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.fakes.scenario import wait_for
from tests.integration.test_claude_cli import _claude_binary, cli_env
from tests.processes import processes_in, worker_python

SECRETS = {
    "TELEGRAM_BOT_TOKEN": "123456789:AAH-telegram-token-for-the-sandbox-test",
    "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-for-the-sandbox-test",
    "OPENAI_API_KEY": "sk-proj-other-backend-key-sandbox-test",
    "DEEPSEEK_API_KEY": "sk-deepseek-other-backend-key-sandbox-test",
}
OWN_KEY = "sk-ant-own-key-of-the-claude-backend"

HOSTILE_WORKER = r'''#!{python}
import hashlib, json, os, re, sqlite3, sys

probe = json.loads(re.search(r"PROBE (\{{.*\}})", sys.argv[-1], re.S).group(1))
probe["job_id"] = int(os.path.basename(os.getcwd()))  # its cwd is its job folder
report = {{}}

def attempt(name, action):
    try:
        report[name] = "ok: " + str(action())[:200]
    except Exception as exc:
        report[name] = f"failed: {{type(exc).__name__}}"

def digest(value):
    return hashlib.sha256(value.encode()).hexdigest()

report["env_names"] = sorted(os.environ)
report["env_digests"] = sorted(digest(v) for v in os.environ.values())
def engine_environ():
    raw = open(f"/proc/{{probe['engine_pid']}}/environ", "rb").read().decode("utf-8", "replace")
    return sorted(digest(item.split("=", 1)[-1]) for item in raw.split("\0") if item)
try:
    report["engine_env_digests"] = engine_environ()
except Exception as exc:
    report["engine_env_digests"] = []
for name in ("db", "other_job", "core", "config", "operator_home"):
    attempt("read_" + name, lambda path=probe[name]: open(path, "rb").read(64))
attempt("list_data_folder", lambda: sorted(os.listdir(probe["data_folder"])))
attempt("list_jobs", lambda: sorted(os.listdir(os.path.join(probe["data_folder"], "jobs"))))
for name in ("write_data_folder", "write_outside", "write_operator_home"):
    attempt(name, lambda path=probe[name]: open(path, "w").write("planted by the worker"))
def forge():
    db = sqlite3.connect(f"file:{{probe['db']}}?mode=rw", uri=True)
    db.execute("INSERT INTO reviews(job_id, revision, reviewer_backend, reviewer_family, maker_family, score,"
               " passed, verdict, created_at) VALUES (?, 0, 'gpt', 'openai', 'anthropic', 10, 1, 'pass', 0)",
               (probe["job_id"],))
    db.execute("UPDATE jobs SET title = 'FORGED' WHERE id = ?", (probe["job_id"],))
    db.commit()
    return "forged"
attempt("forge_review", forge)
report["home"] = os.environ.get("HOME")
report["tmpdir"] = os.environ.get("TMPDIR")

def emit(event):
    print(json.dumps(event), flush=True)
emit({{"type": "system", "subtype": "init", "model": "hostile-1", "session_id": "s-hostile"}})
emit({{"type": "result", "subtype": "success", "is_error": False, "result": json.dumps(report),
      "session_id": "s-hostile", "num_turns": 1, "total_cost_usd": 0,
      "usage": {{"input_tokens": 1, "output_tokens": 1}}}})
'''

CONFIG = """
home = "{home}"

[engine]
sandbox = "{sandbox}"

[[backends]]
name = "claude"
kind = "claude_cli"
family = "anthropic"
binary = "{binary}"
api_key_env = "SB_SANDBOX_CLAUDE_KEY"

[[backends]]
name = "gpt"
kind = "openai"
family = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "OPENAI_API_KEY"

[[backends]]
name = "deepseek"
kind = "openai"
family = "deepseek"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "DEEPSEEK_API_KEY"

[routing]
analysis = ["claude"]

[memory]
enabled = false
"""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _bwrap_or_skip() -> None:
    bwrap, problem = find_bubblewrap()
    if bwrap is None:
        pytest.skip(f"no working bubblewrap on this machine ({problem}); install the bubblewrap package")


async def _run_hostile_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str) -> dict[str, Any]:
    """Run the hostile worker as one analysis job through the real engine; its report and the paths it tried."""
    operator_home = tmp_path / "operator"
    (operator_home / ".ssh").mkdir(parents=True)
    (operator_home / ".ssh" / "id_ed25519").write_text("OPERATOR-PRIVATE-KEY")
    home = tmp_path / "data"
    config_path = tmp_path / "etc" / "switchboard.toml"
    worker = tmp_path / "tools" / "claude"
    worker.parent.mkdir()
    worker.write_text(HOSTILE_WORKER.format(python=worker_python()))
    worker.chmod(0o755)
    config_path.parent.mkdir()
    config_path.write_text(CONFIG.format(home=home, sandbox=sandbox, binary=worker))
    monkeypatch.setenv("HOME", str(operator_home))
    monkeypatch.setenv("SWITCHBOARD_HOME", str(home))
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config_path))
    monkeypatch.setenv("SB_SANDBOX_CLAUDE_KEY", OWN_KEY)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()
    clock = SystemClock()
    store = await Store.open(settings.db_path, clock)
    engine = None
    try:
        (home / "core.md").write_text("CORE-MEMORY-OF-THE-OPERATOR")
        (home / "jobs" / "999").mkdir(parents=True)
        (home / "jobs" / "999" / "result.md").write_text("ANOTHER-JOBS-RESULT")
        probe = {
            "engine_pid": os.getpid(), "db": str(settings.db_path), "data_folder": str(home),
            "other_job": str(home / "jobs" / "999" / "result.md"), "core": str(home / "core.md"),
            "config": str(config_path), "operator_home": str(operator_home / ".ssh" / "id_ed25519"),
            "write_data_folder": str(home / "planted.txt"), "write_outside": str(tmp_path / "planted.txt"),
            "write_operator_home": str(operator_home / "planted.txt"),
        }
        job, _ = await Control(settings, store, clock).add_job(f"PROBE {json.dumps(probe)}", type="analysis")
        engine = Engine(settings, store, build_backends(settings, clock), clock)
        await engine.start()

        async def finished() -> Job | None:
            found = await store.get_job(job.id)
            return found if found.state in (JobState.DONE, JobState.FAILED, JobState.NEEDS_HUMAN) else None

        done = await wait_for(finished, timeout_s=60, what="the hostile job finished")
        assert done.state == JobState.DONE, (done.state, done.last_error)
        report = json.loads(done.result_text or "{}")
        report["_title"] = done.title
        with sqlite3.connect(settings.db_path) as db:
            report["_reviews"] = db.execute("SELECT count(*) FROM reviews").fetchone()[0]
        report["_planted"] = [p for p in (home / "planted.txt", tmp_path / "planted.txt",
                                          operator_home / "planted.txt") if p.exists()]
        report["_job_dir"] = str((home / "jobs" / str(job.id)).resolve())
        return report
    finally:
        if engine is not None:
            await engine.stop(grace_s=0)
        await store.close()


def _assert_environment_holds(report: dict[str, Any]) -> None:
    names = set(report["env_names"])
    assert not names & {*SECRETS, "SWITCHBOARD_HOME", "SWITCHBOARD_CONFIG", "SB_SANDBOX_CLAUDE_KEY"}, names
    assert not {_digest(v) for v in SECRETS.values()} & set(report["env_digests"])
    # Its own key arrives, under the name the CLI reads; HOME and TMPDIR are its own, in its job folder.
    assert _digest(OWN_KEY) in report["env_digests"] and "ANTHROPIC_API_KEY" in names
    assert report["home"].startswith(report["_job_dir"]) and report["tmpdir"].startswith(report["_job_dir"])


async def test_bubblewrap_leaves_a_hostile_worker_nothing(tmp_path, monkeypatch):
    _bwrap_or_skip()
    report = await _run_hostile_worker(tmp_path, monkeypatch, "bwrap")
    _assert_environment_holds(report)
    # The engine's own environment (through /proc) is out of reach: another pid namespace.
    assert not {_digest(v) for v in SECRETS.values()} & set(report["engine_env_digests"])
    for attempt in ("read_db", "read_other_job", "read_core", "read_config", "read_operator_home",
                    "write_operator_home", "forge_review"):
        assert report[attempt].startswith("failed"), (attempt, report[attempt])
    # A write outside its folders lands, at most, in the sandbox's private /tmp, gone with it.
    assert report["_planted"] == []
    # Of the data folder it sees only the way to its own job folder.
    assert report["list_data_folder"] == "ok: ['jobs']"
    assert report["list_jobs"] == f"ok: ['{Path(report['_job_dir']).name}']"
    assert report["_reviews"] == 0 and report["_title"] != "FORGED"


async def test_without_a_sandbox_the_environment_still_holds(tmp_path, monkeypatch):
    report = await _run_hostile_worker(tmp_path, monkeypatch, "off")
    _assert_environment_holds(report)


async def test_the_real_claude_works_inside_bubblewrap_and_its_shell_sees_nothing_of_ours(tmp_path):
    """The pinned ``claude`` in the sandbox, asked by the (fake) model to run a shell command that looks for the
    operator's files, the database and the Telegram token: the command runs, and finds none of them."""
    _bwrap_or_skip()
    claude_bin = _claude_binary()
    data = tmp_path / "data"
    job_dir = data / "jobs" / "1"
    job_dir.mkdir(parents=True)
    (data / "switchboard.db").write_text("DATABASE-CONTENT")
    with FakeAnthropic() as fake:
        env = {**cli_env(tmp_path, fake), "TELEGRAM_BOT_TOKEN": SECRETS["TELEGRAM_BOT_TOKEN"]}
        (Path(env["HOME"]) / "notes.txt").write_text("OPERATOR-NOTES")
        command = (f"cat {Path(env['HOME']) / 'notes.txt'} {data / 'switchboard.db'} 2>&1; "
                   "echo ENV: $(env | cut -d= -f1 | sort | tr '\\n' ' '); echo PID1: $(tr '\\0' ' ' < /proc/1/cmdline)")
        fake.script(Reply("", tool_uses=[ToolUse("Bash", {"command": command})]), Reply("Looked around."))
        sandbox = Sandbox.detect("bwrap", hidden=[data, Path(env["HOME"])])
        config = BackendConfig(name="claude", kind="claude_cli", model="claude-fake-1", family="anthropic",
                               binary=claude_bin)
        backend = ClaudeCliBackend(config, clock=SystemClock(), env=env, sandbox=sandbox)
        result = await backend.run(BackendRequest(job_id=1, job_type="analysis", prompt="Look around.",
                                                  workspace=job_dir, timeout_s=60, permission_mode="acceptEdits",
                                                  allowed_tools=["Bash"]))
        assert result.ok, result.failure
        assert result.text == "Looked around."
        tool_output = json.dumps(fake.model_calls()[-1].body["messages"])
    assert sandbox.bwrap is not None
    assert "ENV:" in tool_output and f"PID1: {sandbox.bwrap.path} " in tool_output  # it ran, in the sandbox
    assert "No such file" in tool_output
    assert "OPERATOR-NOTES" not in tool_output and "DATABASE-CONTENT" not in tool_output
    assert "TELEGRAM_BOT_TOKEN" not in tool_output and "ANTHROPIC_API_KEY" in tool_output
    assert processes_in(job_dir) == []
