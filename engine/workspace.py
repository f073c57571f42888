"""Workers' workspace: the job folders under ``$SWITCHBOARD_HOME`` and the files workers report through.

Layout (DESIGN.md section 8)::

    home/jobs/<id>/CLAUDE.md           compaction-proof job context, from prompts/worker_context.md
    home/jobs/<id>/progress.md         the worker's current state
    home/jobs/<id>/step-N.md           per-step deliverables
    home/jobs/<id>/result.md           the final result
    home/jobs/<id>/question.md         a question for the operator (the job waits in needs_input)
    home/jobs/<id>/checkpoints/        evidence, e.g. tests.txt for coding jobs
    home/projects/<sanitised name>/    where project work happens

Workers are models with shell access, so nothing they leave behind is trusted: every read and write is checked
to stay inside the job folder (a ``result.md`` symlinked to ``/etc/passwd`` reads as absent, a write through a
symlinked folder is refused) and reads are capped.
Plain synchronous file-system code: each call is a few small files, faster than a thread hop.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

import prompts
from engine.errors import WorkspaceError
from engine.models import Job

__all__ = ["MAX_NAME_CHARS", "Workspace", "sanitize_name"]

MAX_NAME_CHARS = 64
# File systems limit a name to 255 bytes; non-Latin letters take up to 4 bytes each in UTF-8.
_MAX_NAME_BYTES = 128
# A worker can write a gigabyte of log into result.md; the engine reads at most this much of any file.
MAX_READ_CHARS = 2_000_000
# The reviewer reads test output in its prompt; the verdict is at the end of a test run, so keep the tail.
MAX_EVIDENCE_CHARS = 20_000
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
)
_UNSAFE_RUN_RE = re.compile(r"[^\w.-]+")
_DASHES_RE = re.compile(r"-{2,}")
_QUESTION_FILE = "question.md"
_ARCHIVED_QUESTION_RE = re.compile(r"^question-(\d+)\.md$")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def sanitize_name(name: str) -> str:
    """A file-system-safe folder name for ``name``: never empty, no separators, no ``..``, no control or
    invisible characters, not hidden, at most ``MAX_NAME_CHARS`` characters.

    Letters of any script, digits, ``.``, ``_`` and ``-`` are kept; every other run becomes one ``-``. When
    truncating or when nothing usable is left, a short hash of the original keeps different names apart.
    """
    text = unicodedata.normalize("NFKC", str(name))
    # \w keeps Unicode letters and digits; it also matches some combining marks, harmless in a name.
    cleaned = _DASHES_RE.sub("-", _UNSAFE_RUN_RE.sub("-", text)).strip("-._ ")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    if not cleaned:
        return f"unnamed-{_short_hash(text)}"
    if len(cleaned) > MAX_NAME_CHARS or len(cleaned.encode("utf-8")) > _MAX_NAME_BYTES:
        head = cleaned[: MAX_NAME_CHARS - 9]
        while len(head.encode("utf-8")) > _MAX_NAME_BYTES - 9:
            head = head[:-1]
        cleaned = f"{head.rstrip('-._')}-{_short_hash(text)}"
    if cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        # Windows treats "nul" and "nul.txt" alike as a device, so the stem itself must change.
        cleaned = f"_{cleaned}"
    return cleaned


class Workspace:
    """The job and project folders under one data folder ``home``.

    ``redact`` (the engine's ``Redactor``) masks secrets in every file the engine writes, and in a worker's own
    ``result.md`` once the engine has read the result (``redact_file``)."""

    def __init__(self, home: Path, redact: Callable[[str], str] | None = None) -> None:
        self.home = Path(home)
        self._redact = redact

    # --- Paths ---------------------------------------------------------------------------------------------

    def job_dir(self, job_id: int) -> Path:
        # bool is an int in Python; "True" is never a job id.
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 0:
            raise WorkspaceError(f"invalid job id {job_id!r}")
        return self.home / "jobs" / str(job_id)

    def checkpoint_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "checkpoints"

    def project_dir(self, name: str) -> Path:
        return self.home / "projects" / sanitize_name(name)

    def workspace_for(self, job: Job) -> Path:
        """Where the work itself happens: the job's own workspace if set, else its project's, else its folder."""
        if job.workspace:
            return Path(job.workspace)
        if job.project:
            return self.project_dir(job.project)
        return self.job_dir(job.id)

    def _path(self, job_id: int, name: str) -> Path:
        """The path of ``name`` in the job folder. Refuses names that point elsewhere by their spelling."""
        parts = Path(name).parts if name else ()
        if not parts or "\x00" in name or Path(name).is_absolute() or any(p in ("..", ".") for p in parts):
            raise WorkspaceError(f"invalid file name {name!r} for job {job_id}")
        return self.job_dir(job_id).joinpath(*parts)

    def _escapes(self, job_id: int, path: Path) -> bool:
        # Resolving follows symlinks a worker may have planted (result.md -> /etc/passwd, checkpoints -> /).
        return not path.resolve().is_relative_to(self.job_dir(job_id).resolve())

    # --- Preparing a job -----------------------------------------------------------------------------------

    def prepare(self, job: Job, *, memories: str = "", core: str = "", instructions: str = "",
                work_dir: Path | None = None) -> Path:
        """Create the job's folders and write CLAUDE.md (rewritten every run, so a retry or revision sees fresh
        memories) and a first progress.md (kept if it exists, so a retried worker resumes from it).

        ``instructions`` default to the job type's block from ``prompts/``. Returns the job folder; for project
        work the project folder is created too and named in CLAUDE.md. ``work_dir``: where the work happens when
        the engine chose it (a worktree, a folder of the operator's).
        """
        job_dir = self.job_dir(job.id)
        self.checkpoint_dir(job.id).mkdir(parents=True, exist_ok=True)
        workspace = work_dir or self.workspace_for(job)
        if job.project and not job.workspace and work_dir is None:
            workspace.mkdir(parents=True, exist_ok=True)
        context = prompts.render(
            "worker_context",
            job_id=job.id,
            job_type=job.type,
            title=job.title or "(untitled)",
            session=job.session_id or "(new session)",
            project=job.project or "(none)",
            job_dir=job_dir,
            workspace=workspace,
            checkpoint_dir=self.checkpoint_dir(job.id),
            instructions=(instructions or prompts.job_instructions(job.type)).strip(),
            core_memory=core.strip() or "(empty)",
            prompt=job.prompt.strip(),
            memories=memories.strip() or "(none)",
        )
        self.write_text(job.id, "CLAUDE.md", context)
        if self._read(job.id, "progress.md") is None:
            self.write_text(job.id, "progress.md", f"# Progress\n\nJob {job.id} queued; no work done yet.\n")
        return job_dir

    # --- Reading what the worker left ----------------------------------------------------------------------

    def _read(self, job_id: int, name: str, max_chars: int = MAX_READ_CHARS) -> str | None:
        """The text of a file in the job folder; None if it is missing, not a file, or blank."""
        path = self._path(job_id, name)
        if self._escapes(job_id, path):
            return None  # treated as absent: the engine never reads outside the job folder
        try:
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                text = handle.read(max_chars + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if len(text) > max_chars:
            text = text[:max_chars] + "\n\n[truncated by Switchboard]\n"
        return text if text.strip() else None

    def read_result(self, job_id: int) -> str | None:
        return self._read(job_id, "result.md")

    def read_progress(self, job_id: int) -> str | None:
        return self._read(job_id, "progress.md")

    def take_question(self, job_id: int) -> str | None:
        """The worker's question, archived as ``question-<n>.md`` so an answered question is not asked again.

        A blank question file is archived too (it would otherwise stall every later check) and gives None.
        """
        path = self._path(job_id, _QUESTION_FILE)
        if not path.is_file() and not path.is_symlink():
            return None
        text = self._read(job_id, _QUESTION_FILE)
        self._archive_question(job_id, path)
        return text.strip() if text else None

    def _archive_question(self, job_id: int, path: Path) -> None:
        folder = path.parent
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := _ARCHIVED_QUESTION_RE.match(p.name))]
        number = max(taken, default=0) + 1
        while True:
            target = folder / f"question-{number}.md"
            try:
                # Claim the name exclusively: os.replace would silently overwrite an earlier question.
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                number += 1
                continue
            os.replace(path, target)
            return

    def test_evidence(self, job_id: int, max_chars: int = MAX_EVIDENCE_CHARS) -> str | None:
        """The coding worker's saved test output (``checkpoints/tests.txt``), or None if missing or blank.

        Long output keeps its tail, where test runners print their summary.
        """
        text = self._read(job_id, "checkpoints/tests.txt")
        if text is None:
            return None
        if len(text) > max_chars:
            text = f"[first {len(text) - max_chars} characters omitted]\n" + text[-max_chars:]
        return text

    # --- Writing -------------------------------------------------------------------------------------------

    def redact_file(self, job_id: int, name: str) -> None:
        """Mask secrets in a file a worker wrote (``result.md``), so none stays in the data folder."""
        if self._redact is None:
            return
        text = self._read(job_id, name)
        if text is not None and self._redact(text) != text:
            self.write_text(job_id, name, text)

    def write_text(self, job_id: int, name: str, text: str) -> Path:
        """Write ``name`` (a path relative to the job folder) atomically: a reader never sees half a file."""
        text = self._redact(text) if self._redact is not None else text
        path = self._path(job_id, name)
        if self._escapes(job_id, path.parent):
            raise WorkspaceError(f"{name!r} would be written outside the folder of job {job_id}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates a fresh file exclusively, so a planted symlink at a guessable temp name is useless.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            # os.replace swaps the directory entry, so a symlink planted at ``path`` is replaced, not followed.
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
