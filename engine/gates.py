"""The quality gate: maker-checker review by a model of another family.

Flow for a job type with ``review = true``: the maker succeeds -> deterministic checks (non-empty result; for
a job of a project with a test command, the engine's own test run must pass, and the reviewer sees it with
the diff; for coding without one, the worker's saved test output, shown as unverified) -> the job waits in
``reviewing`` while a ``review`` job (authorship hidden, never routed to the maker's family) scores it against
the rubric -> pass: done;
below threshold: revising -> queued with the critique, at most ``max_revisions`` times -> needs_human.
The database itself refuses ``done`` for a reviewed job without a passing review by another family
(trigger ``jobs_review_gate``); the operator's explicit approval is the only override.
"""

from __future__ import annotations

import prompts
from engine import notices
from engine.backends.base import BackendResult
from engine.errors import UnparseableReview
from engine.job_factory import new_job
from engine.models import Job, JobState, NewJob, Priority, Source
from engine.settings import BackendConfig, JobTypeConfig, Settings
from engine.store import Completion, NewAttempt, NewReview, ParentUpdate, Store
from engine.verdict import ReviewVerdict, parse_review
from engine.workspace import Workspace
from engine.worktrees import WorkEvidence, keep_tail

INLINE_RESULT_CHARS = 4000
CHECKS_FAMILY = "deterministic-checks"
# A review by another model of the maker's own family is recorded under its family with this mark: reviews are
# cross-family by definition (the table's CHECK), and this one is not, as stats and the notice say.
SAME_FAMILY_MARK = " (same family)"
# A test command that hangs: the work goes back once; a second hang goes to the operator.
MAX_TEST_TIMEOUTS = 2


def verdict_problem(text: str) -> str | None:
    """Why a reviewer's answer is not a usable verdict, or None when it is."""
    try:
        parse_review(text)
    except UnparseableReview as exc:
        return str(exc)
    return None


async def revision_prompt(store: Store, job: Job) -> str:
    reviews = await store.job_reviews(job.id)
    critique = reviews[-1].critique if reviews else "(no critique recorded)"
    return prompts.render(
        "revision",
        prompt=job.prompt,
        critique=prompts.untrusted("the reviewer's critique", critique),
        previous_result=prompts.untrusted("your previous result", job.result_text or ""),
        revision=job.revision,
        max_revisions=job.max_revisions,
    )


def _result_fields(job: Job, config: BackendConfig, result: BackendResult, workspace: Workspace) -> dict[str, object]:
    fields: dict[str, object] = {
        "result_text": result.text,
        "result_summary": notices.summarize(result.text),
        "maker_backend": config.name,
        "maker_family": config.family,
        "session_id": result.session_id or job.session_id,
        "progress": None,
        "last_failure_class": None,
        "last_error": None,
    }
    if len(result.text) > INLINE_RESULT_CHARS:
        fields["result_path"] = str(workspace.write_text(job.id, "result.md", result.text))
    else:
        workspace.redact_file(job.id, "result.md")  # the worker's own, when it wrote one
    return fields


async def complete_maker(
    settings: Settings,
    workspace: Workspace,
    job: Job,
    attempts: list[NewAttempt],
    config: BackendConfig,
    result: BackendResult,
    owner: str,
    now: float,
    *,
    work: WorkEvidence | None = None,
) -> Completion:
    fields = _result_fields(job, config, result, workspace)
    if work is not None:
        fields |= {"work_summary": work.summary() or None, "work_documents": "\n".join(work.documents) or None}
    base = Completion(job_id=job.id, owner=owner, to_state=JobState.DONE, reason="", attempts=attempts, fields=fields)
    if work is not None and work.problem:
        return _checks_failed(job, base, config, work.problem)
    if work is not None and work.tests is not None and not work.tests.passed:
        return _tests_failed(job, base, config, work)
    if not job.review_required:
        return _done_unreviewed(job, base, config, result, now)
    type_config = settings.job_type(job.type)
    evidence: str | None
    if work is not None and work.tests is not None:
        evidence = work.for_reviewer()  # the engine's own run: the worker's tests.txt counts for nothing here
    else:
        evidence = _workers_own_evidence(workspace, job, type_config)
        if type_config.require_test_evidence and evidence is None:
            return _checks_failed(
                job,
                base,
                config,
                "no test evidence: run the tests and save their output to the checkpoint folder as tests.txt",
            )
        if work is not None and work.diff:
            evidence = "\n\n".join(e for e in (evidence, work.for_reviewer()) if e)
    review = _review_job(settings, type_config, job, config, result, evidence)
    return base.model_copy(
        update={
            "to_state": JobState.REVIEWING,
            "new_jobs": [review],
            "reason": f"made by {config.name}; checks passed; review requested",
        }
    )


def _workers_own_evidence(workspace: Workspace, job: Job, type_config: JobTypeConfig) -> str | None:
    """Without a test command the engine can run, the worker's saved test output (``tests.txt``), marked as its
    own unverified report."""
    text = workspace.test_evidence(job.id) if type_config.require_test_evidence else None
    if text is None:
        return None
    return prompts.untrusted("the worker's own report of a test run (Switchboard did not run it)", text)


def _tests_failed(job: Job, base: Completion, config: BackendConfig, work: WorkEvidence) -> Completion:
    """The engine's test run failed or hung: back to the maker with the output, never to a reviewer. A second
    hang goes to the operator."""
    tests = work.tests
    assert tests is not None
    problem = f"the project's tests {tests.summary}. Make them pass.\n\n{keep_tail(tests.report(), 6000)}"
    if tests.timed_out and work.timeouts >= MAX_TEST_TIMEOUTS:
        job = job.model_copy(update={"revision": job.max_revisions})  # no revision left for a hanging command
    return _checks_failed(job, base, config, problem)


def _done_unreviewed(
    job: Job, base: Completion, config: BackendConfig, result: BackendResult, now: float
) -> Completion:
    """No review for this job type: the maker's result is the answer. Its cost is the job's total after this run."""
    finished = job.model_copy(update={**base.fields, "cost_usd": job.cost_usd + sum(a.cost_usd for a in base.attempts)})
    done = notices.job_done(finished, now, backend=config.name, score=None, summary=notices.summarize(result.text),
                            simulated=config.simulated)
    return base.model_copy(update={"reason": f"done by {config.name}", "outbox": [done]})


def _review_job(
    settings: Settings,
    type_config: JobTypeConfig,
    job: Job,
    config: BackendConfig,
    result: BackendResult,
    evidence: str | None,
) -> NewJob:
    """The review job for a maker's result: authorship hidden, scored against the job type's rubric."""
    rubric = "rubric_coding" if type_config.rubric == "coding" else "rubric_default"
    review_prompt = prompts.render(
        rubric,
        task=job.prompt,
        result=prompts.untrusted("your colleague's work", result.text),
        evidence=evidence or "(not required for this job type)",
        threshold=f"{type_config.threshold:g}",
    )
    return new_job(
        settings,
        type="review",
        prompt=review_prompt,
        title=f"Review of #{job.id}: {job.title}"[:120],
        project=job.project,
        priority=Priority(min(int(job.priority), int(Priority.HIGH))),
        source=Source.SYSTEM,
        chat_id=job.chat_id,
        parent_id=job.id,
        idempotency_key=f"review:{job.id}:{job.revision}",
        maker_family=config.family,
    )


def _checks_failed(job: Job, base: Completion, config: BackendConfig, problem: str) -> Completion:
    """Deterministic checks failed: the work never reaches a reviewer. Revise, or ask the operator."""
    review = NewReview(
        job_id=job.id,
        revision=job.revision,
        reviewer_backend="checks",
        reviewer_family=CHECKS_FAMILY,
        maker_family=config.family,
        score=0.0,
        passed=False,
        verdict="revise",
        critique=problem,
    )
    if job.revision < job.max_revisions:
        fields = {**base.fields, "revision": job.revision + 1}
        return base.model_copy(
            update={
                "to_state": JobState.QUEUED,
                "fields": fields,
                "reviews": [review],
                "reason": f"deterministic checks failed: {problem}",
            }
        )
    return base.model_copy(
        update={
            "to_state": JobState.NEEDS_HUMAN,
            "reviews": [review],
            "reason": f"deterministic checks failed: {problem}",
            "outbox": [notices.needs_human(job, problem, None)],
        }
    )


async def complete_review(
    settings: Settings,
    store: Store,
    review_job: Job,
    attempts: list[NewAttempt],
    result: BackendResult,
    owner: str,
) -> Completion:
    verdict = parse_review(result.text)  # validated already by the runner
    parent = await store.get_job(review_job.parent_id or 0)
    base = Completion(
        job_id=review_job.id,
        owner=owner,
        to_state=JobState.DONE,
        attempts=attempts,
        reason="verdict recorded",
        fields={"result_text": result.text},
    )
    if parent is None or parent.state != JobState.REVIEWING:
        return base.model_copy(update={"reason": "verdict recorded; the reviewed job moved on meanwhile"})
    threshold = settings.job_type(parent.type).threshold
    passed = verdict.passes(threshold)
    review = _review_record(parent, attempts[-1], verdict, passed)
    if passed:
        # The job's total as the operator reads it: its maker's runs (revisions included) and every review.
        reviews = [j for j in await store.list_jobs(parent_id=parent.id, limit=1000) if j.type == "review"]
        total = parent.cost_usd + sum(j.cost_usd for j in reviews) + sum(a.cost_usd for a in attempts)
        maker = next((b for b in settings.backends if b.name == parent.maker_backend), None)
        return _review_passed(base, review, parent.model_copy(update={"cost_usd": total}), review_job, verdict,
                              simulated=maker is not None and maker.simulated)
    if parent.revision < parent.max_revisions:
        return _revision_queued(base, review, parent, review_job, verdict, threshold)
    return _rejected(base, review, parent, verdict)


def _review_record(parent: Job, reviewer: NewAttempt, verdict: ReviewVerdict, passed: bool) -> NewReview:
    family = reviewer.family
    if family == (parent.maker_family or ""):  # only under gate.when_no_other_family = "same_family_other_model"
        family += SAME_FAMILY_MARK
    return NewReview(
        job_id=parent.id,
        revision=parent.revision,
        reviewer_backend=reviewer.backend,
        reviewer_family=family,
        maker_family=parent.maker_family or "",
        scores=verdict.scores,
        score=verdict.score,
        passed=passed,
        verdict=verdict.verdict,
        critique=verdict.critique.strip(),
    )


def _review_passed(
    base: Completion, review: NewReview, parent: Job, review_job: Job, verdict: ReviewVerdict, *, simulated: bool
) -> Completion:
    """``parent`` carries the job's total cost (reviews included) for the notice only; the store keeps its own."""
    update = ParentUpdate(job_id=parent.id, to_state=JobState.DONE, reason=f"review passed ({verdict.score:g})")
    note = None
    if review.reviewer_family.endswith(SAME_FAMILY_MARK):
        # Only ``[gate] when_no_other_family = "same_family_other_model"`` routes a review to the maker's family:
        # the operator's standing approval in the config is the override the gate needs, and it is said so.
        note = (f"Reviewed by {review.reviewer_backend}, another model of the maker's family "
                f"({parent.maker_family}): no reviewer of another family is configured "
                "(gate.when_no_other_family = same_family_other_model).")
        update = update.model_copy(update={
            "fields": {"operator_approved": True},
            "reason": f"review passed ({verdict.score:g}) by {review.reviewer_backend} of the same family; approved by "
                      "the operator's policy gate.when_no_other_family = same_family_other_model"})
    done = notices.job_done(
        parent,
        review_job.updated_at,
        backend=parent.maker_backend,
        score=verdict.score,
        summary=parent.result_summary or "",
        note=note,
        simulated=simulated,
        with_reviews=True,
    )
    return base.model_copy(update={"reviews": [review], "parent_updates": [update], "outbox": [done]})


def _revision_queued(
    base: Completion, review: NewReview, parent: Job, review_job: Job, verdict: ReviewVerdict, threshold: float
) -> Completion:
    updates = [
        ParentUpdate(
            job_id=parent.id, to_state=JobState.REVISING, reason=f"review score {verdict.score:g} < {threshold:g}"
        ),
        ParentUpdate(
            job_id=parent.id,
            to_state=JobState.QUEUED,
            reason="revision queued",
            fields={"revision": parent.revision + 1, "run_after": review_job.updated_at},
        ),
    ]
    return base.model_copy(update={"reviews": [review], "parent_updates": updates})


def _rejected(base: Completion, review: NewReview, parent: Job, verdict: ReviewVerdict) -> Completion:
    """Out of revisions: the operator decides."""
    ask = notices.needs_human(parent, verdict.critique, verdict.score)
    update = ParentUpdate(
        job_id=parent.id, to_state=JobState.NEEDS_HUMAN, reason=f"rejected after {parent.revision} revision(s)"
    )
    return base.model_copy(update={"reviews": [review], "parent_updates": [update], "outbox": [ask]})
