"""The conversation with the operator: handled update ids (inbox), the operator's message accepted with its chat
job, and the conversation's messages."""

from __future__ import annotations

import sqlite3

from engine.models import ChatMessage, Job, NewJob
from engine.store.core import StoreCore
from engine.store.writes import _enqueue


class ConversationMixin(StoreCore):
    """The ``Store`` methods on the inbox and the conversation (``messages``)."""

    async def inbox_claim(self, update_id: int) -> bool:
        """Record an update id before handling it. False when it was already handled."""
        return await self._tx(
            lambda conn, now: (
                conn.execute(
                    "INSERT OR IGNORE INTO inbox(update_id, received_at) VALUES (?, ?)", (update_id, now)
                ).rowcount
                == 1
            )
        )

    async def accept_operator_message(self, update_id: int | None, chat_id: int, text: str, job: NewJob) -> Job | None:
        """The operator's message, the conversation row and its chat job in one transaction, so a crash can
        neither lose the message nor let a redelivered update create a second job. None when the update
        was already handled."""

        def run(conn: sqlite3.Connection, now: float) -> Job | None:
            if (
                update_id is not None
                and conn.execute(
                    "INSERT OR IGNORE INTO inbox(update_id, received_at) VALUES (?, ?)", (update_id, now)
                ).rowcount
                != 1
            ):
                return None
            created, _ = _enqueue(conn, job, now)
            conn.execute(
                "INSERT INTO messages(chat_id, role, text, job_id, created_at) VALUES (?, 'operator', ?, ?, ?)",
                (chat_id, text, created.id, now),
            )
            return created

        return await self._tx(run)

    async def recent_messages(self, chat_id: int, limit: int = 12) -> list[ChatMessage]:
        sql = "SELECT * FROM (SELECT * FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id"
        return await self._read(lambda conn, _: [ChatMessage(**dict(r)) for r in conn.execute(sql, (chat_id, limit))])
