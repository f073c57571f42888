"""The outbox: messages to the operator, queued by the engine and claimed, sent and retried by a channel."""

from __future__ import annotations

import sqlite3

from engine.models import NewOutbox, OutboxMessage
from engine.store.core import StoreCore
from engine.store.rows import _outbox
from engine.store.writes import _add_outbox


class OutboxMixin(StoreCore):
    """The ``Store`` methods on the outbox."""

    async def add_outbox(self, message: NewOutbox) -> bool:
        """Queue a message to the operator. False when its dedupe key was already used."""
        return await self._tx(lambda conn, now: _add_outbox(conn, message, now))

    async def outbox_due(self, limit: int = 20, *, include_non_urgent: bool = True) -> list[OutboxMessage]:
        sql = "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
        if not include_non_urgent:
            sql += " AND urgent = 1"
        sql += " ORDER BY urgent DESC, id LIMIT ?"
        return await self._read(lambda conn, now: [_outbox(r) for r in conn.execute(sql, (now, limit))])

    async def outbox_mark_sent(self, message_id: int, telegram_message_id: int | None) -> None:
        await self._tx(
            lambda conn, now: conn.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ?, telegram_message_id = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (now, telegram_message_id, message_id),
            )
        )

    async def outbox_claim(self, message_id: int) -> bool:
        """Mark a due message 'sending' (its own transaction) just before the API call. False when another
        sender took it or it is no longer pending. A crash leaves it 'sending': see ``outbox_recover_sending``."""
        return await self._tx(
            lambda conn, now: (
                conn.execute(
                    "UPDATE outbox SET state = 'sending' WHERE id = ? AND state = 'pending'", (message_id,)
                ).rowcount
                == 1
            )
        )

    async def outbox_recover_sending(self) -> list[int]:
        """At a sender's start: messages a previous process left 'sending' (it died mid-request, or while
        waiting out a flood wait) go back to 'pending'. Returns their ids."""

        def run(conn: sqlite3.Connection, now: float) -> list[int]:
            rows = conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, "
                "last_error = 'interrupted while sending; resent after a restart' "
                "WHERE state = 'sending' RETURNING id",
                (now,),
            ).fetchall()
            return sorted(r[0] for r in rows)

        return await self._tx(run)

    async def outbox_mark_retry(self, message_id: int, delay_s: float, error: str, *, give_up_after: int = 8) -> None:
        def run(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                "state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE id = ?",
                (now + delay_s, error[:500], give_up_after, message_id),
            )

        await self._tx(run)

    async def outbox_mark_uncertain(self, message_id: int, error: str) -> None:
        """A send that timed out after the request went out: it may have arrived. Not sent again; counted in
        ``stats`` (``uncertain_sends``)."""
        sql = "UPDATE outbox SET state = 'uncertain', attempts = attempts + 1, last_error = ? WHERE id = ?"
        await self._tx(lambda conn, _: conn.execute(sql, (error[:500], message_id)))

    async def outbox_all(self) -> list[OutboxMessage]:
        return await self._read(lambda conn, _: [_outbox(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")])
