"""Turning a request for work into a fully resolved ``NewJob`` (tier, attempts, review) from the settings."""

from __future__ import annotations

from engine.errors import InvalidJob
from engine.models import NewJob, Priority, Source
from engine.settings import Settings

MAX_PROMPT_CHARS = 100_000


def new_job(
    settings: Settings,
    *,
    type: str,
    prompt: str,
    title: str = "",
    project: str | None = None,
    priority: Priority = Priority.NORMAL,
    source: Source = Source.OPERATOR,
    chat_id: int | None = None,
    parent_id: int | None = None,
    idempotency_key: str | None = None,
    run_after: float | None = None,
    maker_family: str | None = None,
) -> NewJob:
    if type not in settings.job_types:
        raise InvalidJob(f"unknown job type {type!r} (known: {', '.join(sorted(settings.job_types))})")
    text = prompt.strip()
    if not text:
        raise InvalidJob("the job's text is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidJob(f"the job's text is too long ({len(text)} characters, at most {MAX_PROMPT_CHARS})")
    config = settings.job_type(type)
    return NewJob(
        type=type,
        prompt=text,
        title=title.strip()[:120],
        project=project,
        source=source,
        priority=priority,
        tier=config.tier,
        run_after=run_after,
        max_attempts=settings.engine.max_attempts,
        max_revisions=config.max_revisions,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
        chat_id=chat_id,
        review_required=config.review,
        maker_family=maker_family,
    )
