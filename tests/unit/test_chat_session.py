"""The warm persona's rules (engine.chat_session): when a chat turn resumes its session and when it starts afresh,
and what counts as a session the CLI lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.base import BackendRequest, BackendResult
from engine.chat_session import ChatSession, chat_dir, resume_failed, rotation_reason, system_hash
from engine.failures import Failure, FailureClass

HOUR = 3600.0
NOW = 1_767_225_600.0
SYSTEM = "You are Switch.\n\n## Core memory\n\nThe operator is Ada."


def _kept(**fields: object) -> ChatSession:
    base: dict[str, object] = {"backend": "claude", "session_id": "s-1", "started_at": NOW - 2 * HOUR,
                               "tokens": 10_000, "system_hash": system_hash(SYSTEM)}
    return ChatSession.model_validate(base | fields)


@pytest.mark.parametrize(
    ("kept", "backend", "system", "now", "why"),
    [
        (None, "claude", SYSTEM, NOW, "no session yet"),
        (_kept(), "claude", SYSTEM, NOW, None),  # young, small, same identity: resumed
        (_kept(), "claude-work", SYSTEM, NOW, "claude's"),  # another backend's session (its own config folder)
        (_kept(), "claude", SYSTEM, NOW + 21 * HOUR, None),  # 23 h old: still resumed
        (_kept(), "claude", SYSTEM, NOW + 22 * HOUR, "24 h old"),  # a day old: fresh
        (_kept(tokens=99_999), "claude", SYSTEM, NOW, None),
        (_kept(tokens=100_000), "claude", SYSTEM, NOW, "100000 tokens"),  # at the size limit: fresh
        (_kept(), "claude", SYSTEM + " She likes tea.", NOW, "core memory changed"),  # a new core identity
    ],
)
def test_rotation_rule(kept: ChatSession | None, backend: str, system: str, now: float, why: str | None) -> None:
    found = rotation_reason(kept, backend=backend, system=system, now=now, max_tokens=100_000,
                            max_age_s=24 * HOUR)
    assert (found is None) if why is None else (found is not None and why in found), found


def _request(session_id: str | None) -> BackendRequest:
    return BackendRequest(job_id=1, job_type="chat", prompt="hi", session_id=session_id)


def test_a_lost_session_is_recognised_and_nothing_else() -> None:
    lost = BackendResult(failure=Failure(failure_class=FailureClass.UNKNOWN, signature="cli:error_during_execution",
                                         message="No conversation found with session ID: s-1"))
    limited = BackendResult(failure=Failure(failure_class=FailureClass.RATE_LIMITED, signature="cli:rate_limit",
                                            message="usage limit reached"))
    assert resume_failed(_request("s-1"), lost)
    assert not resume_failed(_request(None), lost)  # a fresh session cannot have been lost
    assert not resume_failed(_request("s-1"), limited)  # a rate limit is the policy's business
    assert not resume_failed(_request("s-1"), BackendResult(text="ok"))


def test_a_chats_folder_is_its_number(tmp_path: Path) -> None:
    assert chat_dir(tmp_path, 42) == tmp_path / "chats" / "42"
    assert chat_dir(tmp_path, -100123) == tmp_path / "chats" / "-100123"  # a group
