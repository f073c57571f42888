"""engine/sandbox.py: the worker's environment allow-list and the bubblewrap command line, and the settings
around them (engine.sandbox, backends.env_passthrough, permission modes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.errors import SandboxUnavailable
from engine.sandbox import Bubblewrap, Sandbox, WorkerMounts, find_bubblewrap
from engine.settings import DEFAULT_JOB_TYPES, BackendConfig, ConfigError, load_settings
from tests.processes import worker_python

SOURCE = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/op", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
    "TERM": "xterm", "HTTPS_PROXY": "http://proxy:3128", "TELEGRAM_BOT_TOKEN": "123:tok",
    "TELEGRAM_WEBHOOK_SECRET": "hook", "OPENAI_API_KEY": "sk-other", "SWITCHBOARD_HOME": "/data",
    "SWITCHBOARD_CONFIG": "/etc/sb.toml", "CLAUDE_CODE_MAX_RETRIES": "0", "MY_TOOL_SETTING": "x",
}


def test_environment_is_an_allow_list():
    sandbox = Sandbox(secret_vars=frozenset({"TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "OPENAI_API_KEY"}))
    env = sandbox.environment(SOURCE, names=["OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN", "MY_TOOL_SETTING"],
                              prefixes=["CLAUDE_CODE_"], values={"ANTHROPIC_API_KEY": "own"})
    assert env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "TERM": "xterm",
                   "HTTPS_PROXY": "http://proxy:3128", "CLAUDE_CODE_MAX_RETRIES": "0", "MY_TOOL_SETTING": "x",
                   "ANTHROPIC_API_KEY": "own"}
    # A backend's own key passes even when it is on the secret list (it is this backend's secret).
    own = sandbox.environment(SOURCE, names=["OPENAI_API_KEY"], own=["OPENAI_API_KEY"])
    assert own["OPENAI_API_KEY"] == "sk-other" and "TELEGRAM_BOT_TOKEN" not in own


def test_the_telegram_secrets_are_held_back_by_any_sandbox():
    env = Sandbox().environment(SOURCE, names=["TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"])
    assert "TELEGRAM_BOT_TOKEN" not in env and "TELEGRAM_WEBHOOK_SECRET" not in env


def test_worker_dirs_are_in_the_job_folder(tmp_path):
    with Sandbox().worker_dirs(tmp_path) as (home, tmp):
        assert home.parent == tmp_path and tmp.parent == tmp_path and home.is_dir() and tmp.is_dir()
    with Sandbox().worker_dirs(None) as (home, tmp):
        base = home.parent
        assert base.is_dir()
    assert not base.exists()  # a worker without a job folder gets a temporary one, removed afterwards


def test_without_bubblewrap_the_command_is_unchanged():
    assert Sandbox(mode="off").command(["/bin/claude", "-p"], WorkerMounts(writable=(Path("/j"),)), {}) == [
        "/bin/claude", "-p"]


def test_bwrap_command_binds_the_job_and_masks_what_is_hidden(tmp_path):
    data = tmp_path / "data"
    job = data / "jobs" / "7"
    job.mkdir(parents=True)
    (data / "switchboard.db").write_text("db")
    operator = tmp_path / "op"
    (operator / ".claude").mkdir(parents=True)
    workspace = tmp_path / "ws"
    (workspace / "inner").mkdir(parents=True)  # a workspace that holds the data folder's twin below
    sandbox = Sandbox(bwrap=Bubblewrap("/usr/bin/bwrap", "0.8.0"), hidden=(data, operator, workspace / "inner"))
    argv = sandbox.command(["/usr/bin/true", "x"], WorkerMounts(writable=(job, workspace),
                                                                config_dirs=(operator / ".claude",)), {})
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["--", "/usr/bin/true", "x"]
    assert "--die-with-parent" in argv and "--unshare-all" in argv and "--share-net" in argv
    assert "--new-session" not in argv  # the engine's process-group kill must reach the worker
    assert "--unshare-net" not in argv
    pairs = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1)]
    assert ("--bind", str(job)) in pairs and ("--bind", str(operator / ".claude")) in pairs
    assert ("--tmpfs", str(workspace / "inner")) in pairs  # hidden inside a bound folder: masked
    bound = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--bind", "--ro-bind", "--ro-bind-try")}
    assert str(data) not in bound and str(operator) not in bound and str(data / "switchboard.db") not in bound
    assert not any(b.startswith("/etc/switchboard") or b == "/etc" or b == "/etc/shadow" for b in bound)
    # Parents before children: the mask over the hidden folder comes after the workspace that holds it.
    assert argv.index(str(workspace / "inner")) > argv.index(str(workspace))
    assert argv[argv.index("--chdir") + 1] == str(job)


def test_bwrap_mode_refuses_without_bubblewrap():
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Sandbox.detect("bwrap", which=lambda name: None)
    auto = Sandbox.detect("auto", which=lambda name: None)
    assert not auto.isolated and "NO SANDBOX" in auto.describe() and "install bubblewrap" in auto.describe()
    off = Sandbox.detect("off")
    assert not off.isolated and "off" in off.describe()


def test_settings_validate_sandbox_and_passthrough(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "switchboard.toml"
        path.write_text(text)
        return path

    with pytest.raises(ConfigError, match=r"engine\.sandbox"):
        load_settings(write('[engine]\nsandbox = "maybe"\n'))
    backends = ('[[backends]]\nname = "c"\nkind = "claude_cli"\nfamily = "anthropic"\n'
                'env_passthrough = ["{name}"]\n'
                '[[backends]]\nname = "o"\nkind = "openai"\nfamily = "openai"\napi_key_env = "OPENAI_API_KEY"\n')
    for secret in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "OPENAI_API_KEY"):
        with pytest.raises(ConfigError, match="env_passthrough"):
            load_settings(write(backends.format(name=secret)))
    with pytest.raises(ConfigError, match="env_passthrough"):
        load_settings(write(backends.format(name="NOT A NAME")))
    settings = load_settings(write(backends.format(name="GIT_AUTHOR_NAME")))
    assert settings.backend("c").env_passthrough == ["GIT_AUTHOR_NAME"]
    assert settings.engine.sandbox == "auto" and settings.config_path == (tmp_path / "switchboard.toml").resolve()
    assert {"TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "OPENAI_API_KEY"} <= settings.secret_env_names()


def test_no_job_type_bypasses_permissions_by_default():
    assert all(config.permission_mode != "bypassPermissions" for config in DEFAULT_JOB_TYPES.values())
    assert BackendConfig(name="c", kind="claude_cli", family="a").env_passthrough == []


def test_an_interpreter_found_on_path_in_the_home_folder_still_runs(tmp_path):
    """``#!/usr/bin/env faketool`` with faketool in a PATH folder of the (hidden) home, as nvm installs node:
    the interpreter itself is bound, the rest of the home is not."""
    bwrap, problem = find_bubblewrap()
    if bwrap is None:
        pytest.skip(f"no working bubblewrap on this machine ({problem}); install the bubblewrap package")
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "secret.txt").write_text("HOME-SECRET")
    tool = home / "bin" / "faketool"
    tool.write_text(f"#!/bin/sh\nexec {worker_python()} \"$@\"\n")
    tool.chmod(0o755)
    job = tmp_path / "job"
    job.mkdir()
    script = tmp_path / "worker"
    script.write_text(f"#!/usr/bin/env faketool\nimport os\nprint(os.path.exists({str(home / 'secret.txt')!r}))\n")
    script.chmod(0o755)
    env = {"PATH": f"{home / 'bin'}:/usr/bin:/bin"}
    sandbox = Sandbox(bwrap=bwrap, hidden=(home,))
    argv = sandbox.command([str(script)], WorkerMounts(writable=(job,)), env)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
