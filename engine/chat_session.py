"""The warm persona: one ``claude`` CLI session per chat, resumed turn after turn so the prompt cache stays warm.

A chat turn on a ``claude_cli`` backend works in the chat's own folder, ``home/chats/<chat_id>/`` (its working
directory, ``HOME`` and ``TMPDIR``; the sandbox binds it for that turn alone, as it binds a job folder), not in
the job's folder, so the CLI finds the session the previous turn left there and ``--resume`` continues it. The
chat's current session is a kv fact (``chat_session:<chat_id>``): its backend, id, start, last size in tokens
and the hash of the system prompt it was started with.

A turn starts a fresh session instead (``rotation_reason``) when there is none, when it was another backend's,
when it is older than ``[chat] session_max_age_h`` or carries ``[chat] session_max_tokens`` of context, or when
the system prompt (the persona and the core identity) changed: the CLI keeps a resumed session's first system
prompt, so a new core identity needs a new session. The live snapshot and the conversation are in each turn's
prompt, fresh. A session the CLI no longer has ("No conversation found") is forgotten and the turn runs once
more in a fresh one (``resume_failed``); it never fails the turn. HTTP backends have no session: untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from engine.backends.base import BackendRequest, BackendResult
from engine.clock import Clock
from engine.models import Job
from engine.settings import BackendConfig, Settings
from engine.store import Store

__all__ = ["ChatSession", "ChatSessions", "chat_dir", "resume_failed", "rotation_reason", "system_hash"]

_KEY = "chat_session:"
_RESUMABLE_KINDS = ("claude_cli",)


class ChatSession(BaseModel):
    """A chat's current CLI session, as kept between turns."""

    backend: str
    session_id: str
    started_at: float
    tokens: int = 0  # the context its last turn carried (input, cached and output tokens)
    system_hash: str = ""
    turns: int = 1


def chat_dir(home: Path, chat_id: int) -> Path:
    """The persona's folder for one chat (an int, so the name is digits and perhaps a minus)."""
    return Path(home) / "chats" / str(int(chat_id))


def system_hash(system: str) -> str:
    return hashlib.sha256(system.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def rotation_reason(kept: ChatSession | None, *, backend: str, system: str, now: float, max_tokens: int,
                    max_age_s: float) -> str | None:
    """Why this turn starts a fresh session, or None to resume ``kept``."""
    if kept is None:
        return "no session yet"
    if kept.backend != backend:
        return f"the session is {kept.backend}'s"
    if now - kept.started_at >= max_age_s:
        return f"the session is {(now - kept.started_at) / 3600:.0f} h old"
    if kept.tokens >= max_tokens:
        return f"the session carries {kept.tokens} tokens"
    if kept.system_hash != system_hash(system):
        return "the persona or core memory changed"
    return None


def resume_failed(request: BackendRequest, result: BackendResult) -> bool:
    """The CLI could not resume the session it was given (it lost it, or it was never there)."""
    failure = result.failure
    return bool(request.session_id and failure is not None
                and "no conversation found" in failure.message.lower())


class ChatSessions:
    """Where a chat turn runs and which session it resumes; what it left for the next turn."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._busy: set[int] = set()  # chats with a turn running now: a second one at once does not resume

    def applies(self, job: Job, config: BackendConfig) -> bool:
        return job.type == "chat" and job.chat_id is not None and config.kind in _RESUMABLE_KINDS

    async def prepare(self, job: Job, config: BackendConfig,
                      request: BackendRequest) -> tuple[BackendRequest, bool]:
        """The turn's request in the chat's folder, resuming the chat's session unless it must rotate; and
        whether this turn holds the chat's session (``release`` it after the call, ``keep`` what it left)."""
        assert job.chat_id is not None
        folder = chat_dir(self._settings.home, job.chat_id)
        folder.mkdir(parents=True, exist_ok=True)
        request = request.model_copy(update={"workspace": folder, "session_id": None, "work_dir": None,
                                             "read_dirs": [], "cwd_in_work_dir": False})
        if job.chat_id in self._busy:
            return request, False  # two turns of one chat at once: the later one runs fresh and is not kept
        self._busy.add(job.chat_id)
        try:
            return await self._resumed(job, config, request), True
        except BaseException:
            self._busy.discard(job.chat_id)
            raise

    async def _resumed(self, job: Job, config: BackendConfig, request: BackendRequest) -> BackendRequest:
        assert job.chat_id is not None
        kept = await self._kept(job.chat_id)
        chat = self._settings.chat
        why = rotation_reason(kept, backend=config.name, system=request.system, now=self._clock.now(),
                              max_tokens=chat.session_max_tokens, max_age_s=chat.session_max_age_h * 3600)
        if why is None and kept is not None:
            return request.model_copy(update={"session_id": kept.session_id})
        if kept is not None:
            await self._store.add_event(job.id, "session", f"fresh persona session: {why}",
                                        {"previous": kept.session_id})
        return request

    async def forget(self, job: Job, request: BackendRequest) -> BackendRequest:
        """The session could not be resumed: the turn goes on in a fresh one."""
        await self._store.add_event(job.id, "session", "the persona's session could not be resumed; fresh one",
                                    {"previous": request.session_id})
        return request.model_copy(update={"session_id": None})

    def release(self, job: Job) -> None:
        if job.chat_id is not None:
            self._busy.discard(job.chat_id)

    async def keep(self, job: Job, config: BackendConfig, request: BackendRequest, result: BackendResult) -> None:
        """Keep the session a successful turn used, for the next turn."""
        assert job.chat_id is not None
        if not result.ok or not result.session_id:
            return
        kept = await self._kept(job.chat_id)
        resumed = kept if request.session_id and kept and kept.session_id == request.session_id else None
        usage = result.usage
        session = ChatSession(
            backend=config.name, session_id=result.session_id,
            started_at=resumed.started_at if resumed else self._clock.now(),
            tokens=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens + usage.output_tokens,
            system_hash=system_hash(request.system), turns=resumed.turns + 1 if resumed else 1)
        await self._store.kv_put(_KEY + str(job.chat_id), session.model_dump_json())

    async def _kept(self, chat_id: int) -> ChatSession | None:
        raw = await self._store.kv_get(_KEY + str(chat_id))
        try:
            return ChatSession.model_validate_json(raw) if raw else None
        except ValidationError:
            return None
