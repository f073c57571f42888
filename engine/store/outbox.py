"""Talking with the operator: the outbox (messages to send, claimed and retried), the inbox (handled update
ids), the operator's message accepted with its chat job, the conversation (``messages``), and key/value
facts whose change is announced through the outbox."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from engine.models import ChatMessage, Job, NewJob, NewOutbox, OutboxMessage
from engine.store.core import StoreCore
from engine.store.rows import _outbox
from engine.store.writes import _add_outbox, _enqueue


class OutboxMixin(StoreCore):
    """The ``Store`` methods on the outbox, the inbox, the conversation and key/value facts."""

    # ---- outbox, inbox, conversation --------------------------------------------------------------

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

    # ---- key/value facts --------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        sql = "SELECT value FROM kv WHERE key = ?"
        return await self._read(lambda conn, _: row[0] if (row := conn.execute(sql, (key,)).fetchone()) else None)

    async def kv_set_if_changed(self, key: str, value: str, outbox: Iterable[NewOutbox] = ()) -> bool:
        """Set a fact; when it changed, also queue the given messages (same transaction). True if changed."""
        messages = list(outbox)

        def run(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == value:
                return False
            conn.execute(
                "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )
            for message in messages:
                _add_outbox(conn, message, now)
            return True

        return await self._tx(run)
