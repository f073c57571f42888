from __future__ import annotations

import os
from pathlib import Path

import pytest

import prompts
from engine.errors import WorkspaceError
from engine.models import Job, JobState, Priority, Source
from engine.workspace import MAX_NAME_CHARS, Workspace, sanitize_name


def _job(**changes: object) -> Job:
    values: dict[str, object] = {
        "id": 17, "type": "coding", "title": "Fix the login bug", "prompt": "Users cannot log in after 2FA.",
        "source": Source.OPERATOR, "priority": Priority.NORMAL, "state": JobState.RUNNING, "tier": 3,
        "run_after": 0.0, "max_attempts": 3, "max_revisions": 2, "created_at": 0.0, "updated_at": 0.0,
    }
    values.update(changes)
    return Job.model_validate(values)


def _context(ws: Workspace) -> str:
    return (ws.job_dir(17) / "CLAUDE.md").read_text(encoding="utf-8")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "home")


# --- sanitize_name ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd", "a/b", "a\\b", "\x00", "", "   ", ".", "..", "...", ".hidden", "-rf", "a" * 1000,
        "ü" * 500, "日本語のプロジェクト" * 20, "CON", "nul.txt", "a\nb\tc\rd", "\u202eevil\u200b", "~", "$HOME",
        "a..b", "x/../../y", "C:\\Windows", "name\x7f\x1b[31m",
    ],
)
def test_sanitised_names_are_safe(name: str, tmp_path: Path) -> None:
    safe = sanitize_name(name)
    assert safe and len(safe) <= MAX_NAME_CHARS and len(safe.encode()) < 255
    assert "/" not in safe and "\\" not in safe and ".." not in safe and not safe.startswith(".")
    assert all(ch.isprintable() and not ch.isspace() for ch in safe)
    assert safe.split(".")[0].lower() not in {"con", "nul", "prn", "aux"}
    # And the file system agrees: it is one plain folder right inside its parent.
    folder = tmp_path / safe
    folder.mkdir()
    assert folder.parent == tmp_path and folder.resolve().parent == tmp_path.resolve()


def test_sanitising_keeps_ordinary_names_readable() -> None:
    assert sanitize_name("website") == "website"
    assert sanitize_name("My Project v2.1") == "My-Project-v2.1"
    assert sanitize_name("../../etc/passwd") == "etc-passwd"
    assert sanitize_name("a/b") == "a-b"
    assert sanitize_name("Café") == "Café"


def test_sanitising_is_stable_and_keeps_long_or_empty_names_apart() -> None:
    assert sanitize_name("x" * 100) == sanitize_name("x" * 100)
    assert sanitize_name("x" * 100) != sanitize_name("x" * 101)
    assert sanitize_name("") != sanitize_name("..")
    assert sanitize_name("").startswith("unnamed-")


# --- Paths --------------------------------------------------------------------------------------------------


def test_paths(ws: Workspace) -> None:
    assert ws.job_dir(5) == ws.home / "jobs" / "5"
    assert ws.checkpoint_dir(5) == ws.home / "jobs" / "5" / "checkpoints"
    assert ws.project_dir("../../etc") == ws.home / "projects" / "etc"


@pytest.mark.parametrize("job_id", [-1, True, "5", "../1", 1.5, None])
def test_invalid_job_ids_are_refused(ws: Workspace, job_id: object) -> None:
    with pytest.raises(WorkspaceError):
        ws.job_dir(job_id)  # type: ignore[arg-type]


# --- prepare ------------------------------------------------------------------------------------------------


def test_prepare_writes_the_job_context(ws: Workspace) -> None:
    job = _job(session_id="sess-abc")
    folder = ws.prepare(job, memories="- The tests need Postgres running.", core="Operator: Dana, in Lisbon.")
    assert folder == ws.job_dir(17) and ws.checkpoint_dir(17).is_dir()
    context = (folder / "CLAUDE.md").read_text(encoding="utf-8")
    for expected in (
        "Job id: 17", "Type: coding", "Title: Fix the login bug", "Session: sess-abc", "Project: (none)",
        f"Job folder: {folder}", f"Workspace (where the work itself happens): {folder}",
        f"Checkpoint folder: {ws.checkpoint_dir(17)}", "Users cannot log in after 2FA.",
        "Operator: Dana, in Lisbon.", prompts.job_instructions("coding").strip(),
    ):
        assert expected in context
    assert context.rstrip().endswith("- The tests need Postgres running.")
    assert "$" not in context.replace("$$", "")
    assert ws.read_progress(17) is not None


def test_prepare_for_a_project_job_creates_the_project_folder(ws: Workspace) -> None:
    ws.prepare(_job(project="../Web Site"))
    project = ws.home / "projects" / "Web-Site"
    assert project.is_dir()
    context = _context(ws)
    assert f"Workspace (where the work itself happens): {project}" in context
    assert "Project: ../Web Site" in context


def test_prepare_defaults_and_custom_instructions(ws: Workspace) -> None:
    ws.prepare(_job(type="research", session_id=None), instructions="Only use sources from 2026.")
    context = _context(ws)
    assert "Session: (new session)" in context and "Only use sources from 2026." in context
    assert "## Relevant memories" in context and context.rstrip().endswith("(none)")


def test_prepare_again_keeps_progress_and_refreshes_context(ws: Workspace) -> None:
    ws.prepare(_job(), memories="old memory")
    ws.write_text(17, "progress.md", "Step 2 of 3 done.")
    ws.prepare(_job(), memories="new memory")
    assert ws.read_progress(17) == "Step 2 of 3 done."
    context = _context(ws)
    assert "new memory" in context and "old memory" not in context


def test_hostile_job_text_is_not_interpreted(ws: Workspace) -> None:
    ws.prepare(_job(title="$job_id ${memories}", prompt="echo $HOME and $$"))
    context = _context(ws)
    assert "Title: $job_id ${memories}" in context and "echo $HOME and $$" in context


# --- Reading results, questions, evidence ------------------------------------------------------------------


def test_result_round_trip(ws: Workspace) -> None:
    assert ws.read_result(17) is None
    path = ws.write_text(17, "result.md", "Done: fixed it.")
    assert path == ws.job_dir(17) / "result.md"
    assert ws.read_result(17) == "Done: fixed it."
    assert not [p for p in ws.job_dir(17).iterdir() if p.name.endswith(".tmp")]


def test_blank_result_counts_as_missing(ws: Workspace) -> None:
    ws.write_text(17, "result.md", "  \n\n")
    assert ws.read_result(17) is None


def test_huge_result_is_capped(ws: Workspace) -> None:
    from engine import workspace as module

    ws.write_text(17, "result.md", "x" * (module.MAX_READ_CHARS + 10))
    text = ws.read_result(17)
    assert text is not None and text.endswith("[truncated by Switchboard]\n")
    assert len(text) < module.MAX_READ_CHARS + 100


def test_question_round_trip(ws: Workspace) -> None:
    ws.prepare(_job())
    assert ws.take_question(17) is None
    ws.write_text(17, "question.md", "Which database: Postgres or SQLite?\n")
    assert ws.take_question(17) == "Which database: Postgres or SQLite?"
    # Answered once: not asked again.
    assert ws.take_question(17) is None
    ws.write_text(17, "question.md", "Deploy now?")
    assert ws.take_question(17) == "Deploy now?"
    folder = ws.job_dir(17)
    assert (folder / "question-1.md").read_text(encoding="utf-8").startswith("Which database")
    assert (folder / "question-2.md").read_text(encoding="utf-8") == "Deploy now?"
    assert not (folder / "question.md").exists()


def test_blank_question_is_archived_and_ignored(ws: Workspace) -> None:
    ws.write_text(17, "question.md", "\n")
    assert ws.take_question(17) is None
    assert not (ws.job_dir(17) / "question.md").exists()


def test_question_archive_never_overwrites(ws: Workspace) -> None:
    ws.write_text(17, "question-1.md", "first")
    ws.write_text(17, "question-7.md", "seventh")
    ws.write_text(17, "question.md", "next")
    assert ws.take_question(17) == "next"
    assert (ws.job_dir(17) / "question-8.md").read_text(encoding="utf-8") == "next"
    assert (ws.job_dir(17) / "question-1.md").read_text(encoding="utf-8") == "first"


def test_test_evidence(ws: Workspace) -> None:
    ws.prepare(_job())
    assert ws.test_evidence(17) is None
    ws.write_text(17, "checkpoints/tests.txt", "")
    assert ws.test_evidence(17) is None
    ws.write_text(17, "checkpoints/tests.txt", "$ pytest\n12 passed in 0.4s\n")
    assert ws.test_evidence(17) == "$ pytest\n12 passed in 0.4s\n"


def test_long_test_evidence_keeps_the_summary_at_the_end(ws: Workspace) -> None:
    ws.write_text(17, "checkpoints/tests.txt", "noise\n" * 10_000 + "3 failed, 9 passed\n")
    text = ws.test_evidence(17, max_chars=1000)
    assert text is not None and text.endswith("3 failed, 9 passed\n") and text.startswith("[first ")
    assert len(text) < 1100


# --- Guards -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape.md", "/etc/passwd", "", ".", "a/../../b", "x\x00y", "checkpoints/.."])
def test_write_refuses_names_outside_the_job_folder(ws: Workspace, name: str) -> None:
    with pytest.raises(WorkspaceError):
        ws.write_text(17, name, "x")
    assert not (ws.home / "jobs" / "escape.md").exists()


def test_symlinked_result_is_not_read_and_is_replaced_on_write(ws: Workspace, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    ws.prepare(_job())
    os.symlink(secret, ws.job_dir(17) / "result.md")
    assert ws.read_result(17) is None
    ws.write_text(17, "result.md", "the real result")
    assert ws.read_result(17) == "the real result"
    assert secret.read_text(encoding="utf-8") == "top secret"


def test_symlinked_folder_is_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws.job_dir(17).mkdir(parents=True)
    os.symlink(outside, ws.checkpoint_dir(17))
    (outside / "tests.txt").write_text("fake pass", encoding="utf-8")
    assert ws.test_evidence(17) is None
    with pytest.raises(WorkspaceError):
        ws.write_text(17, "checkpoints/tests.txt", "x")
    assert (outside / "tests.txt").read_text(encoding="utf-8") == "fake pass"


def test_symlinked_question_is_archived_unread(ws: Workspace, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    ws.job_dir(17).mkdir(parents=True)
    os.symlink(secret, ws.job_dir(17) / "question.md")
    assert ws.take_question(17) is None
    assert not (ws.job_dir(17) / "question.md").is_symlink()
    assert secret.read_text(encoding="utf-8") == "top secret"


def test_directory_where_a_file_should_be_reads_as_missing(ws: Workspace) -> None:
    (ws.job_dir(17) / "result.md").mkdir(parents=True)
    assert ws.read_result(17) is None
