"""Branch names the engine makes for jobs, checked by git itself, and the environment its git commands run in."""

from __future__ import annotations

import subprocess

import pytest

from engine.gitrepo import branch_for, git_env


@pytest.mark.parametrize(("title", "branch"), [
    ("Fix the failing test in pager.py", "switchboard/12-fix-the-failing-test-in-pager-py"),
    ("Ärger mit Übergrößen", "switchboard/12-arger-mit-ubergroen"),
    ("../../etc/passwd; rm -rf /", "switchboard/12-etc-passwd-rm-rf"),
    ("修复分页", "switchboard/12"),
    ("", "switchboard/12"),
    ("x" * 300, "switchboard/12-" + "x" * 40),
    ("-- lock. @{ } ~^:? *[", "switchboard/12-lock"),
])
def test_a_jobs_branch_is_its_id_and_a_plain_slug(title: str, branch: str) -> None:
    assert branch_for(12, title) == branch
    checked = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip() == branch


def test_git_runs_without_the_callers_git_variables() -> None:
    env = git_env({"PATH": "/usr/bin", "GIT_DIR": "/elsewhere", "GIT_WORK_TREE": "/x", "HOME": "/h"})
    assert "GIT_DIR" not in env and "GIT_WORK_TREE" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["PATH"] == "/usr/bin" and env["HOME"] == "/h"
