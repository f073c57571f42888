"""The one error tree (engine/errors.py) and the one operator-facing text for each error (``describe_error``)."""

from __future__ import annotations

import builtins
import inspect
import re
from pathlib import Path

import pytest

import engine.errors as errors_module
import prompts
from engine.errors import (
    OPERATOR_ERRORS,
    AlreadyRunning,
    Busy,
    ChannelRefused,
    ConfigError,
    EngineRunning,
    GateRefused,
    IllegalTransition,
    InvalidJob,
    LeaseLost,
    LostDatabase,
    NotFound,
    SandboxUnavailable,
    StoreError,
    SwitchboardError,
    UnparseableReview,
    WorkspaceError,
    describe_error,
)
from engine.models import JobState
from memory.errors import CoreMemoryTooLarge, EmbedderError, MemoryNotFound, MemoryStoreError

ROOT = Path(__file__).resolve().parents[2]
TREE = [cls for _, cls in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(cls, SwitchboardError) and cls.__module__ == "engine.errors"]


def test_every_class_is_drawn_in_the_docstring_map():
    doc = errors_module.__doc__ or ""
    assert len(TREE) == 16
    for cls in [*TREE, MemoryStoreError, CoreMemoryTooLarge, MemoryNotFound, EmbedderError,
                prompts.UnknownPrompt, prompts.MissingPlaceholder]:
        assert re.search(rf"\b{cls.__name__}\b", doc), cls


@pytest.mark.parametrize(("cls", "builtin"), [
    (InvalidJob, ValueError), (UnparseableReview, ValueError), (WorkspaceError, ValueError),
    (NotFound, LookupError),
])
def test_builtin_bases_callers_catch_are_kept(cls, builtin):
    assert issubclass(cls, SwitchboardError) and issubclass(cls, builtin)


def test_no_exception_class_is_defined_outside_the_tree():
    """engine/ and bot/ define their exceptions only in engine/errors.py (memory/ and prompts/ are leaves)."""
    builtin_errors = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}
    error_bases = builtin_errors | {cls.__name__ for cls in TREE}
    # A class statement on one line (ruff's line length keeps every one of ours there); plain text, not ``ast``,
    # which CPython 3.11 can fail to run late in a long pytest session.
    class_line = re.compile(r"^class (\w+)\(([^)]*)\):", re.MULTILINE)
    strays = []
    for path in sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "bot").rglob("*.py")]):
        if path == ROOT / "engine" / "errors.py":
            continue
        for name, bases in class_line.findall(path.read_text(encoding="utf-8")):
            if {base.strip().rpartition(".")[2] for base in bases.split(",")} & error_bases:
                strays.append(f"{path.relative_to(ROOT)}:{name}")
    assert strays == []


def test_public_import_paths_of_package_inits_still_work():
    import bot.telegram
    import engine.store

    assert engine.store.LeaseLost is LeaseLost and engine.store.GateRefused is GateRefused
    assert engine.store.StoreError is StoreError
    assert bot.telegram.ChannelRefused is ChannelRefused


# --- describe_error: one line per class ----------------------------------------------------------------------

DESCRIPTIONS = [
    (ConfigError("[engine] slots: must be at least 1"), "configuration error: [engine] slots: must be at least 1"),
    (InvalidJob("the job's text is empty"), "the job's text is empty"),
    (NotFound("no job #999"), "no job #999"),
    (IllegalTransition(7, JobState.DONE, JobState.RUNNING), "job #7 is done and cannot become running"),
    (UnparseableReview("the review is empty"), "the review is empty"),
    (WorkspaceError("invalid file name '..' for job 3"), "invalid file name '..' for job 3"),
    (StoreError("cannot open database /x/db.sqlite: disk I/O error"),
     "cannot open database /x/db.sqlite: disk I/O error"),
    (LostDatabase("/x/switchboard.db is empty (no tables) but the data folder was used before"),
     "/x/switchboard.db is empty (no tables) but the data folder was used before"),
    (EngineRunning("another engine is running on /x (pid 7 on h, lease held until 10:00:00 UTC): stop it first"),
     "another engine is running on /x (pid 7 on h, lease held until 10:00:00 UTC): stop it first"),
    (Busy("database is locked"), "the database is busy, try again (database is locked)"),
    (LeaseLost("job 4: lease lost (now cancelled)"),
     "the job moved on while this ran (job 4: lease lost (now cancelled))"),
    (GateRefused("quality gate: a reviewed job needs a passing review by another model family"),
     "quality gate: a reviewed job needs a passing review by another model family"),
    (AlreadyRunning("another switchboard is already running on /home/x"),
     "another switchboard is already running on /home/x"),
    (ChannelRefused("Telegram rejected the bot token"), "Telegram rejected the bot token"),
    (SandboxUnavailable("bubblewrap is not installed"), "bubblewrap is not installed"),
    # The leaves in memory/ and prompts/ read as their own messages.
    (MemoryNotFound("3f9a0c1d"), "no memory with id '3f9a0c1d'"),
    (EmbedderError("ollama: connection refused"), "ollama: connection refused"),
    (CoreMemoryTooLarge(5000, 4096), str(CoreMemoryTooLarge(5000, 4096))),
    (prompts.UnknownPrompt("no prompt named 'nope'"), "no prompt named 'nope'"),
    (prompts.MissingPlaceholder("review", "task"), "prompt 'review': no value given for placeholder $task"),
    # What an operator command raises from the standard library.
    (ValueError("bad duration '7x' (use 30m, 12h, 7d)"), "bad duration '7x' (use 30m, 12h, 7d)"),
    (KeyError("no backend named 'x'"), "no backend named 'x'"),
    # Anything else is a crash, and says so by its type.
    (RuntimeError("boom"), "RuntimeError: boom"),
    (RuntimeError(), "RuntimeError"),
]


@pytest.mark.parametrize(("exc", "expected"), DESCRIPTIONS)
def test_describe_error(exc, expected):
    assert describe_error(exc) == expected


def test_every_class_in_the_tree_has_a_description_test():
    described = {type(exc) for exc, _ in DESCRIPTIONS}
    assert set(TREE) - {SwitchboardError} <= described


def test_operator_errors_cover_what_commands_refuse():
    for cls in (NotFound, IllegalTransition, GateRefused, InvalidJob, WorkspaceError, ValueError, KeyError):
        assert issubclass(cls, OPERATOR_ERRORS)
    # A broken database is not the operator's mistake: it is not answered as "cannot do that".
    assert not issubclass(StoreError, OPERATOR_ERRORS) and not issubclass(LeaseLost, OPERATOR_ERRORS)
