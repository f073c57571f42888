"""``Store``, the durable job store: one class whose methods are gathered from one module per concern.

Every public method is one transaction and one hop to the store's thread (see ``core.py``). Where to look:

- ``jobs.py``: enqueue, read and list jobs, claim, heartbeat, transition, cancel, retry, the orphan sweep
- ``completion.py``: ``Completion`` and ``complete``/``complete_many``, which end one run of a job
- ``transitions.py``: ``_set_state`` (every job state change, with its event; raises ``engine.errors.LeaseLost``)
- ``outbox.py``: messages to the operator, claimed, sent and retried by a channel
- ``conversation.py``: handled updates (inbox), the operator's message with its chat job, the conversation
- ``kv.py``: key/value facts, their change announced through the outbox
- ``backends.py``: ``backend_state``, the rate-limit and circuit-breaker cache
- ``quota.py``: subscription usage windows and the facts quota-aware routing reads
- ``schedules.py`` and ``projects.py``: schedules and projects
- ``lease.py``: the engine lease, one engine per data folder
- ``stats.py``: capacity and money, ``stats``, the daily digest's numbers
- ``writes.py``: inserts shared by several concerns (events, outbox rows, reviews, new jobs)
- ``rows.py``: row -> model mapping
- ``core.py``: ``_tx``/``_read`` and the transaction; ``db.py``: the connection and the migrations
"""

from __future__ import annotations

from pathlib import Path

from engine.clock import Clock
from engine.store.backends import BackendsMixin
from engine.store.completion import CompletionsMixin
from engine.store.conversation import ConversationMixin
from engine.store.core import StoreCore
from engine.store.db import Database
from engine.store.jobs import JobsMixin
from engine.store.kv import KvMixin
from engine.store.lease import LeaseMixin
from engine.store.outbox import OutboxMixin
from engine.store.projects import ProjectsMixin
from engine.store.quota import QuotaMixin
from engine.store.schedules import SchedulesMixin
from engine.store.stats import StatsMixin


class Store(
    JobsMixin,
    CompletionsMixin,
    OutboxMixin,
    ConversationMixin,
    KvMixin,
    BackendsMixin,
    QuotaMixin,
    SchedulesMixin,
    ProjectsMixin,
    StatsMixin,
    LeaseMixin,
    StoreCore,
):
    """The durable job store. Open with ``await Store.open(path, clock)``."""

    @classmethod
    async def open(cls, path: Path, clock: Clock, *, blocking: bool = False) -> Store:
        """``blocking``: every transaction in the calling thread, no event loop needed (see ``Database``)."""
        db = Database(path, blocking=blocking)
        await db.open()
        return cls(db, clock)

    async def close(self) -> None:
        await self._db.close()

    @property
    def path(self) -> Path:
        return self._db.path

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits."""
        return await self._db.call(lambda conn: conn.execute("PRAGMA data_version").fetchone()[0])
