"""Messages to the operator, as outbox rows. The engine writes them; a channel (Telegram, console) sends them.

Each has a dedupe key, so a notification written twice (a retried transaction, a restart) is sent once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.models import Job, NewOutbox

SUMMARY_CHARS = 600


def summarize(text: str) -> str:
    """A result flattened to one paragraph of at most ``SUMMARY_CHARS``: what a notice and ``result_summary`` show."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SUMMARY_CHARS else flat[: SUMMARY_CHARS - 3] + "..."


def _about(job: Job, kind: str, key: str, text: str, payload: dict[str, Any], *, urgent: bool = False) -> NewOutbox:
    """A notice about ``job``: to the chat the job came from, sent once per ``job:<id>:<key>``."""
    return NewOutbox(dedupe_key=f"job:{job.id}:{key}", kind=kind, text=text, chat_id=job.chat_id, job_id=job.id,
                     urgent=urgent, payload=payload)


def _duration(job: Job, now: float) -> str:
    started = job.started_at or job.created_at
    seconds = max(0.0, now - started)
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def job_done(job: Job, now: float, *, backend: str | None, score: float | None, summary: str,
             note: str | None = None, simulated: bool = False, with_reviews: bool = False) -> NewOutbox:
    """``job.cost_usd`` is the job's total after this run (the caller adds what the store adds at commit)."""
    parts = [f"✅ Job #{job.id} done: {job.title}"]
    if summary:
        parts.append(summary)
    if note:
        parts.append(note)
    cost = f"cost ${job.cost_usd:.4f}" + (" incl. reviews" if with_reviews else "")
    cost += " (simulated)" if simulated else ""
    meta = [f"backend {backend or job.maker_backend or '?'}", cost, _duration(job, now)]
    if score is not None:
        meta.insert(1, f"review {score:.1f}/10")
    parts.append(" · ".join(meta))
    payload: dict[str, Any] = {"result_chars": len(job.result_text or ""), "buttons": []}
    if job.work_summary or job.branch:  # work on a project's folder: what changed, the tests, the full diff
        branch = f"branch {job.branch}: /diff {job.id} · /merge {job.id}" if job.branch else ""
        parts.insert(2, "\n".join(p for p in (job.work_summary or "", branch) if p))
        payload["documents"] = (job.work_documents or "").splitlines()
    return _about(job, "job_done", "done", "\n\n".join(parts), payload)


def job_queued(job: Job) -> NewOutbox:
    return _about(job, "job_queued", "queued", f"🆕 Queued #{job.id} · {job.type} (tier {job.tier}): {job.title}",
                  {"buttons": [["Status", f"job:{job.id}"], ["Cancel", f"cancel:{job.id}"]]})


def job_failed(job: Job, failure_class: str, error: str, tried: list[str]) -> NewOutbox:
    tried_text = ", ".join(tried) if tried else "nothing (no backend available)"
    text = (
        f"❌ Job #{job.id} failed: {job.title}\n\nclass: {failure_class}\n{error[:500]}\n\n"
        f"tried: {tried_text} (attempt {job.attempt + 1} of {job.max_attempts})"
    )
    return _about(job, "job_failed", f"failed:{job.attempt}", text,
                  {"buttons": [["Retry", f"retry:{job.id}"], ["Retry on another backend", f"reroute:{job.id}"]]})


def needs_human(job: Job, critique: str | None, score: float | None, *, why: str | None = None,
                result: str | None = None) -> NewOutbox:
    """The operator decides (Approve / Revise again / Discard): why, the reviewer's critique when there is one,
    and the maker's result when no reviewer saw it."""
    score_text = f" (last score {score:.1f}/10)" if score is not None else ""
    why = why or f"The reviewer rejected it after {job.revision} revision(s){score_text}."
    text = f"🧑‍⚖️ Job #{job.id} needs your decision: {job.title}\n\n{why}"
    if critique is not None:
        text += f"\n\nCritique: {critique[:1500]}"
    if result:
        text += f"\n\nResult: {result[:1500]}"
    buttons = [["Approve", f"approve:{job.id}"], ["Revise again", f"revise:{job.id}"], ["Discard", f"cancel:{job.id}"]]
    return _about(job, "needs_human", f"needs_human:{job.revision}", text, {"buttons": buttons}, urgent=True)


def question(job: Job, text: str) -> NewOutbox:
    """A worker's question: urgent, because the job waits for the answer."""
    return _about(job, "question", f"question:{len(job.prompt)}:{_digest(text)}",
                  f"❓ Job #{job.id} asks: {job.title}\n\n{text[:3000]}\n\nAnswer with /answer {job.id} YOUR ANSWER",
                  {"job_id": job.id, "kind": "question"}, urgent=True)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def alert(key: str, text: str, *, urgent: bool = True) -> NewOutbox:
    return NewOutbox(dedupe_key=f"alert:{key}", kind="alert", text=f"⚠️ {text}", urgent=urgent)


def info(key: str, text: str, *, chat_id: int | None = None, job_id: int | None = None) -> NewOutbox:
    return NewOutbox(dedupe_key=key, kind="info", text=text, chat_id=chat_id, job_id=job_id)
