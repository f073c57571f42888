"""Files from the operator: a document or photo becomes a job with the file in the job's own folder, named in its
prompt, so the worker (which sees only its folder) can read it; a voice note becomes text through a local
transcriber when one is configured (``[media] transcriber``).

Only the operator's files get here: the channel's guard turns strangers away before anything is downloaded.
Every file is checked twice before it is kept: its size (the announced size before download, the real one after)
and its type (an allowed extension AND content that looks like it: a "PDF" must start like a PDF, a text file
must be UTF-8 without NUL bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from engine.control import Control
from engine.errors import InvalidJob
from engine.models import Job, Priority, Source
from engine.workspace import Workspace, sanitize_name

__all__ = ["ATTACHMENTS", "add_job_with_files", "check_file", "check_name", "check_size", "transcribe"]

ATTACHMENTS = "attachments"  # the sub-folder of the job's folder that holds the operator's files
_HOLD_S = 3600.0  # a job is held this long while its files are written (released at once after)

_MAGIC: dict[str, tuple[bytes, ...]] = {
    ".pdf": (b"%PDF-",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".webp": (b"RIFF",),
}
_TEXT = frozenset({".txt", ".md", ".csv", ".json", ".log", ".tsv", ".yaml", ".yml", ".xml", ".html"})
ALLOWED_SUFFIXES = frozenset(_MAGIC) | _TEXT


def check_name(name: str) -> str:
    """The safe file name for ``name``, or InvalidJob when its type is not accepted (before any download)."""
    safe = sanitize_name(Path(name).name or "file")
    suffix = Path(safe).suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        kinds = ", ".join(sorted(ALLOWED_SUFFIXES))
        raise InvalidJob(f"{suffix or 'a file without an extension'} is not a type I accept ({kinds})")
    return safe


def check_size(size: int | None, max_bytes: int) -> None:
    """InvalidJob when a file of ``size`` bytes (None: not announced) is over the limit."""
    if size is not None and size > max_bytes:
        raise InvalidJob(f"the file is {size / 2**20:.1f} MB; at most {max_bytes / 2**20:.0f} MB")


def check_file(name: str, data: bytes, max_bytes: int) -> str:
    """The safe file name to keep ``data`` under, or InvalidJob saying why not."""
    check_size(len(data), max_bytes)
    safe = check_name(name)
    suffix = Path(safe).suffix.lower()
    if suffix in _MAGIC:
        if not data.startswith(_MAGIC[suffix]) or (suffix == ".webp" and data[8:12] != b"WEBP"):
            raise InvalidJob(f"the file is named {suffix} but its content is not that")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJob(f"the file is named {suffix} but is not UTF-8 text") from None
        if "\x00" in text:
            raise InvalidJob(f"the file is named {suffix} but holds binary data")
    return safe


async def add_job_with_files(
    control: Control, request: str, files: list[tuple[str, bytes]], *, chat_id: int | None
) -> Job:
    """Queue the operator's request as a job whose folder holds ``files`` (already checked: ``check_file``),
    named in its prompt. The job is held until the files are written, so no worker starts without them."""
    settings = control.settings
    names = _unique([name for name, _ in files])
    listing = "\n".join(f"- {ATTACHMENTS}/{name} ({len(data):,} bytes)" for name, (_, data) in zip(names, files,
                                                                                                       strict=True))
    prompt = (f"{request.strip() or 'Look at the attached file(s) and tell me what matters in them.'}\n\n"
              f"The operator attached these files; they are in your job folder:\n{listing}")
    job, _ = await control.add_job(
        prompt, type=settings.media.job_type, title=(request.strip() or f"Look at {names[0]}")[:80],
        priority=Priority.HIGH, source=Source.OPERATOR, chat_id=chat_id, run_after=control.clock.now() + _HOLD_S,
    )
    folder = Workspace(settings.home).job_dir(job.id) / ATTACHMENTS
    await asyncio.to_thread(_write_all, folder, [(name, data) for name, (_, data) in zip(names, files, strict=True)])
    return await control.release(job.id)


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 2
        while candidate in seen:
            candidate, n = f"{stem}-{n}{suffix}", n + 1
        seen.add(candidate)
        out.append(candidate)
    return out


def _write_all(folder: Path, files: list[tuple[str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, folder / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


async def transcribe(argv: list[str], path: Path, timeout_s: float) -> str:
    """The text of a voice note from the configured local transcriber (its path appended to ``argv``)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, str(path), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise InvalidJob(f"the transcriber could not start ({type(exc).__name__})") from None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise InvalidJob(f"the transcriber took longer than {timeout_s:.0f} s") from None
    text = out.decode("utf-8", "replace").strip()
    if process.returncode != 0 or not text:
        raise InvalidJob("the transcriber gave no text")
    return text
