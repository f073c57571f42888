"""The simulated backend: no credentials, no network, always labelled as simulated.

It powers the out-of-the-box default, the crash tests and the benchmarks. Behaviour is deterministic for a
given profile seed and job: latency, token counts, failures and 429s come from ``SimProfile``. As a persona
it recognises plain requests for work ("research ...", "write ...", "please fix ...") and answers with a valid
enqueue action, acts on job verbs ("cancel 12", "approve 3", "retry 5", "answer 7 TEXT"), answers "what's
running?" from the live snapshot and asks back when it cannot place a request; as a reviewer it returns a
well-formed verdict.
"""

from __future__ import annotations

import json
import random
import re

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage
from engine.clock import Clock
from engine.failures import Failure, FailureClass
from engine.settings import BackendConfig

_WORK_VERBS: dict[str, str] = {
    "research": "research",
    "investigate": "research",
    "find": "research",
    "look": "research",
    "write": "writing",
    "draft": "writing",
    "summarise": "writing",
    "summarize": "writing",
    "fix": "coding",
    "build": "coding",
    "implement": "coding",
    "refactor": "coding",
    "code": "coding",
    "analyse": "analysis",
    "analyze": "analysis",
    "triage": "triage",
    "deploy": "deploy",
}


class SimBackend:
    def __init__(self, config: BackendConfig, *, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._calls = 0

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        self._calls += 1
        rng = random.Random(f"{self.config.sim.seed}:{self.config.name}:{request.job_id}:{self._calls}")
        latency_ms = await self._work(progress)
        failure = self._failure(rng)
        if failure is not None:
            return BackendResult(model=self.config.model, latency_ms=latency_ms, failure=failure)
        text = self._answer(request)
        self._save_test_evidence(request)
        return self._result(request, text, latency_ms)

    async def _work(self, progress: ProgressCallback | None) -> float:
        """The profile's latency on the clock, with one progress line; the milliseconds it took."""
        started = self._clock.now()
        if self.config.sim.latency_ms > 0:
            await self._clock.sleep(self.config.sim.latency_ms / 1000.0)
        if progress is not None:
            await progress(f"{self.config.name} (simulated) working")
        return (self._clock.now() - started) * 1000.0

    def _failure(self, rng: random.Random) -> Failure | None:
        """A 429 or a server error, as often as the profile says."""
        profile = self.config.sim
        if rng.random() < profile.rate_limit_rate:
            return Failure(
                failure_class=FailureClass.RATE_LIMITED,
                http_status=429,
                message="simulated 429",
                resume_at=self._clock.now() + profile.retry_after_s,
                signature="sim:429",
            )
        if rng.random() < profile.failure_rate:
            return Failure(
                failure_class=FailureClass.SERVER_ERROR,
                http_status=500,
                message="simulated server error",
                signature="sim:500",
            )
        return None

    def _save_test_evidence(self, request: BackendRequest) -> None:
        if request.workspace is not None and request.job_type == "coding":
            # Coding work must show test evidence; the simulation's is labelled as such.
            checkpoints = request.workspace / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            (checkpoints / "tests.txt").write_text(f"{label_for(self.config.name)} 1 passed (simulated test run)\n")

    def _result(self, request: BackendRequest, text: str, latency_ms: float) -> BackendResult:
        profile = self.config.sim
        usage = Usage(input_tokens=profile.tokens_in, output_tokens=profile.tokens_out)
        cost = (
            usage.input_tokens * self.config.price_in_per_mtok + usage.output_tokens * self.config.price_out_per_mtok
        ) / 1_000_000
        return BackendResult(
            text=text,
            usage=usage,
            cost_usd=0.0 if self.config.subscription else cost,
            session_id=f"sim-{request.job_id}",
            model=self.config.model,
            latency_ms=latency_ms,
        )

    def _answer(self, request: BackendRequest) -> str:
        label = label_for(self.config.name)
        if request.job_type == "review":
            return _verdict(self.config.sim.review_score)
        if request.job_type == "chat":
            return _persona_reply(request.prompt, label)
        return f"{label} Result for: {request.prompt.strip()[:300]}"

    async def check_credentials(self) -> CredentialStatus:
        return CredentialStatus(ok=True, message="simulated backend: no credentials needed")

    async def aclose(self) -> None:
        return None


def label_for(name: str) -> str:
    return f"[simulated by {name}]"


def _persona_reply(prompt: str, label: str) -> str:
    """The simulated persona: job verbs ("cancel 12", "approve 3", "retry 5", "answer 7 yes"), questions about
    the system ("what's running?") answered from the live snapshot in the prompt, plain requests for work queued,
    and a clarifying question for a request it cannot place."""
    # The operator's newest message is the prompt's last line ("Operator: ..."); history comes before it.
    lines = [line for line in prompt.strip().splitlines() if line.strip()] or [""]
    message = lines[-1].removeprefix("Operator:").strip()
    for reply in (_job_verb(message), _status(message, prompt), _work(message)):
        if reply is not None:
            prose, action = reply
            block = f"\n\n```json\n{json.dumps(action)}\n```" if action is not None else ""
            return f"{label} {prose}{block}"
    if _ASKING_RE.search(message):
        question = "What exactly should I do, and what should the result look like?"
        return f"{label} Happy to help.\n\n```json\n{json.dumps({'action': 'ask', 'question': question})}\n```"
    return f"{label} Noted: {message.strip()[:200]}"


_JOB_VERB_RE = re.compile(r"^(cancel|approve|retry|answer)\s+(?:job\s+)?#?(\d{1,18})\b[\s:,-]*(.*)$", re.I | re.S)
_STATUS_RE = re.compile(r"what('?s| is) (running|going on|happening|queued)|how is .* going|status|overnight", re.I)
_ASKING_RE = re.compile(r"\b(help|can you|could you|please)\b", re.I)
_LATER_RE = re.compile(r"\b(whenever|no rush|when you can|later)\b", re.I)
_SECTIONS = ("Waiting for the operator:", "Running and queued:", "Recently failed:", "Recently finished:")


def _job_verb(message: str) -> tuple[str, dict[str, object] | None] | None:
    match = _JOB_VERB_RE.match(message.strip())
    if match is None:
        return None
    verb, job_id, rest = match.group(1).lower(), int(match.group(2)), match.group(3).strip()
    if verb == "answer":
        if not rest:
            return f"What should I tell job #{job_id}?", None
        return f"Passing your answer to job #{job_id}.", {"action": "answer", "job": job_id, "text": rest}
    return f"Understood: {verb} job #{job_id}.", {"action": verb, "job": job_id}


def _status(message: str, prompt: str) -> tuple[str, None] | None:
    if not _STATUS_RE.search(message):
        return None
    # The snapshot's sections, as engine.snapshot writes them: each heading with its first few lines.
    shown: list[str] = []
    taken: int | None = None  # lines taken from the current section; None outside one
    for line in prompt.splitlines():
        if line in _SECTIONS:
            shown += ["", line]
            taken = 0
        elif taken is not None and line.startswith("- "):
            if taken < 5:
                shown.append(line)
            taken += 1
        else:
            taken = None
    if not shown:
        return "Nothing is running or waiting for you right now.", None
    return "Here is where things stand:\n" + "\n".join(shown).strip("\n"), None


def _work(message: str) -> tuple[str, dict[str, object]] | None:
    words = re.findall(r"[a-zA-Z]+", message.lower())
    job_type = next((_WORK_VERBS[w] for w in words[:12] if w in _WORK_VERBS), None)
    if job_type is None:
        return None
    action: dict[str, object] = {
        "action": "enqueue",
        "type": job_type,
        "title": message.strip()[:60],
        "prompt": message.strip(),
        "project": None,
        "priority": "low" if _LATER_RE.search(message) else None,
    }
    return f"On it: I queued that as a {job_type} job.", action


def _verdict(score: float) -> str:
    verdict = "pass" if score >= 7 else "revise"
    return json.dumps(
        {
            "criteria": [
                {"name": "correctness", "critique": "Simulated review: the result addresses the task.", "score": score},
                {"name": "completeness", "critique": "Simulated review: nothing obvious is missing.", "score": score},
            ],
            "overall_critique": "Simulated reviewer verdict.",
            "score": score,
            "verdict": verdict,
        }
    )
