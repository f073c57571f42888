"""The ``claude_cli`` backend: one fresh ``claude -p`` process per job, its stream-json output parsed line by line.

What the real CLI (pinned 2.1.332) prints is captured in ``tests/fixtures/claude-code/``. The final ``result`` line
carries text, usage, cost and session id; its error fields are read in this order (the CLI reports
``"subtype": "success"`` even on API errors):

1. ``is_error`` with ``api_error`` / ``api_error_status`` (a rate limit's ``resetsAt`` comes from the
   ``rate_limit_event`` line before it),
2. ``terminal_reason`` (``prompt_too_long``, ``budget_exhausted``, ``max_turns``, ``api_error``),
3. ``subtype`` (``error_max_turns``, ``error_max_budget_usd``, ``error_during_execution``),
4. the text, by the one phrase table every backend shares (``engine.failures.FAILURE_PHRASES``).

No ``result`` line means we killed it (timeout) or it crashed (unknown, or auth when it said "Not logged in").
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage
from engine.backends.cli_common import (
    CliBackend,
    clip,
    event_handler,
    parse_line,
    version_output,
    worker_folders,
)
from engine.backends.http_common import Progress
from engine.backends.subprocess_jsonl import ProcessOutcome
from engine.backends.wire import AnthropicUsage, Loose
from engine.clock import iso
from engine.failures import (
    DEFAULT_RATE_LIMIT_PAUSE_S,
    Failure,
    FailureClass,
    classify_http,
    classify_text,
    normalise_signature,
)
from engine.quota import WindowReport, WindowStatus
from engine.ratelimit import parse_resets_at, parse_resets_text
from engine.redaction import redact

BINARY_ENV = "SWITCHBOARD_CLAUDE_BIN"
# The signature of a failure known only by its text (engine.failures.FAILURE_PHRASES gives the class).
_TEXT_SIGNATURES = {
    FailureClass.AUTH: "cli:auth",
    FailureClass.QUOTA: "cli:quota",
    FailureClass.TIMEOUT: "cli:request_timeout",
    FailureClass.OVERLOADED: "cli:overloaded",
    FailureClass.CONTENT_REFUSED: "cli:refusal",
    FailureClass.CONTEXT_OVERFLOW: "cli:prompt_too_long",
    FailureClass.RATE_LIMITED: "cli:rate_limit",
}


# --- The stream, as pydantic models tolerant of everything the CLI may add ----------------------------------

class CliContentBlock(Loose):
    type: str = ""
    text: str | None = None
    name: str | None = None
    input: Any = None
    content: Any = None
    is_error: bool | None = None


class CliMessage(Loose):
    model: str | None = None
    content: list[CliContentBlock] | str = Field(default_factory=list)


class WindowInfo(Loose):
    """One window of ``rate_limit_info.unifiedWindows`` (subscription logins only)."""

    status: str | None = None
    resetsAt: float | None = None
    utilization: float | None = None


class RateLimitInfo(Loose):
    status: str | None = None
    resetsAt: float | None = None
    rateLimitType: str | None = None
    utilization: float | None = None  # the share of the limiting window used (0..1)
    unifiedWindows: dict[str, WindowInfo] | None = None

    def reports(self) -> list[WindowReport]:
        """Every window this event describes: the one it names, and each of ``unifiedWindows`` (which may leave
        out a window it no longer tracks)."""
        reports: dict[str, WindowReport] = {}
        if self.rateLimitType is not None:
            reports[self.rateLimitType] = WindowReport(kind=self.rateLimitType, status=WindowStatus.parse(self.status),
                                                       resets_at=self.resetsAt, utilization=self.utilization)
        for kind, w in (self.unifiedWindows or {}).items():
            named = reports.get(kind)
            status = WindowStatus.parse(w.status) if w.status else named.status if named else WindowStatus.UNKNOWN
            reports[kind] = WindowReport(kind=kind, status=status, resets_at=w.resetsAt, utilization=w.utilization)
        return list(reports.values())


class CliEvent(Loose):
    """One stream-json line. Every field is optional: unknown event types still parse."""

    type: str = ""
    subtype: str | None = None
    session_id: str | None = None
    model: str | None = None
    message: CliMessage | None = None
    # system/api_retry
    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: float | None = None
    error_status: int | None = None
    error: str | None = None
    # system/model_fallback
    fallback_model: str | None = None
    # rate_limit_event
    rate_limit_info: RateLimitInfo | None = None
    # assistant API-error messages and the result
    api_error_status: int | None = None
    api_error_type: str | None = None
    api_error: str | None = None
    # result
    is_error: bool | None = None
    result: str | None = None
    total_cost_usd: float | None = None
    usage: AnthropicUsage | None = None
    terminal_reason: str | None = None
    stop_reason: str | None = None
    safety_stops: int | None = None
    errors: list[str] = Field(default_factory=list)
    num_turns: int | None = None
    permission_denials: list[Any] = Field(default_factory=list)
    modelUsage: dict[str, Any] = Field(default_factory=dict)

    @field_validator("errors", "permission_denials", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("error", mode="before")
    @classmethod
    def _error_as_text(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, str) else json.dumps(value)

    def texts(self) -> list[str]:
        message = self.message
        if message is None:
            return []
        if isinstance(message.content, str):
            return [message.content] if message.content else []
        return [b.text for b in message.content if b.type == "text" and b.text]


def parse_event(line: str) -> CliEvent | None:
    """One line of stream-json (or the single object of ``--output-format json``); None if it is not one."""
    return parse_line(CliEvent, line)


def describe_event(event: CliEvent) -> str:
    """A short line for the progress card and the lease heartbeat."""
    kind = event.type
    if kind == "system" and event.subtype == "init":
        return f"started (model {event.model or '?'})"
    if kind == "system" and event.subtype == "api_retry":
        delay = f" in {event.retry_delay_ms / 1000:.1f}s" if event.retry_delay_ms is not None else ""
        return (f"API retry {event.attempt or '?'}/{event.max_retries or '?'}{delay} "
                f"after {event.error_status or '?'} {event.error or ''}").strip()
    if kind == "system" and event.subtype == "model_fallback":
        return f"switched to fallback model {event.fallback_model or '?'}"
    if kind == "rate_limit_event" and event.rate_limit_info is not None:
        info = event.rate_limit_info
        when = iso(info.resetsAt) if info.resetsAt else "unknown"
        return f"rate limit {info.status or '?'} ({info.rateLimitType or '?'}), resets {when}"
    if kind == "assistant" and event.message is not None:
        parts: list[str] = []
        blocks = event.message.content if isinstance(event.message.content, list) else []
        for block in blocks:
            if block.type == "text" and block.text:
                parts.append(block.text)
            elif block.type == "tool_use":
                parts.append(f"tool {block.name or '?'}{_tool_hint(block.input)}")
            elif block.type == "thinking":
                parts.append("thinking")
        return clip(" | ".join(parts) or "assistant message")
    if kind == "user":
        return "tool result"
    if kind == "result":
        return f"finished ({'error' if event.is_error else 'ok'}, {event.num_turns or 0} turns)"
    return kind + (f"/{event.subtype}" if event.subtype else "") or "event"


def _tool_hint(tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    for key in ("file_path", "path", "command", "pattern", "url", "description"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return f" {clip(value, 80)}"
    return ""


class StreamState:
    """What a run has shown so far. Feed it every event; it keeps what classification needs."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: CliEvent | None = None
        self.rate_limit: RateLimitInfo | None = None
        self.windows: dict[str, WindowReport] = {}  # the latest report of each window kind
        self.last_text: str = ""
        self.api_retries = 0
        self.events = 0

    def feed(self, event: CliEvent) -> None:
        self.events += 1
        self.session_id = event.session_id or self.session_id
        if event.type == "system" and event.subtype == "init" and event.model:
            self.model = event.model
        elif event.type == "system" and event.subtype == "api_retry":
            self.api_retries += 1
        elif event.type == "rate_limit_event" and event.rate_limit_info is not None:
            self.rate_limit = event.rate_limit_info
            self.windows.update((r.kind, r) for r in event.rate_limit_info.reports())
        elif event.type == "assistant":
            texts = event.texts()
            if texts:
                self.last_text = "\n".join(texts)
        elif event.type == "result":
            self.result = event


def result_from_stream(
    state: StreamState,
    *,
    now: float,
    timed_out: bool = False,
    exit_code: int | None = None,
    stderr: str = "",
    secrets: list[str] | None = None,
    subscription: bool = False,
) -> BackendResult:
    """Turn what the stream showed into a ``BackendResult`` with a classified failure (or none)."""
    secrets = secrets or []
    result = state.result
    usage = result.usage.to_usage() if result and result.usage else Usage()
    model = state.model or (next(iter(result.modelUsage), "") if result else "")
    text = (result.result if result and result.result is not None else "") or ""
    cost = 0.0 if subscription or result is None else float(result.total_cost_usd or 0.0)
    failure = classify_cli_result(result, rate_limit=state.rate_limit, now=now, timed_out=timed_out,
                                  exit_code=exit_code, stderr=stderr, secrets=secrets)
    if failure is not None and result is not None and result.is_error:
        # On errors "result" holds the error text, not an answer; keep the last real assistant text instead.
        text = "" if text == state.last_text else state.last_text
    # A subscription pays nothing per run; what the CLI says the run would cost is what the subscription saved.
    saved = float(result.total_cost_usd or 0.0) if subscription and result is not None else 0.0
    return BackendResult(text=text, usage=usage, cost_usd=cost, session_id=state.session_id, model=model or "",
                         failure=failure, list_price_usd=saved, windows=list(state.windows.values()))


def classify_cli_result(
    result: CliEvent | None,
    *,
    rate_limit: RateLimitInfo | None,
    now: float,
    timed_out: bool = False,
    exit_code: int | None = None,
    stderr: str = "",
    secrets: list[str] | None = None,
) -> Failure | None:
    """The failure a CLI run ended with, or None for a usable answer."""
    secrets = secrets or []
    if result is None:
        return _no_result(timed_out=timed_out, exit_code=exit_code, stderr=stderr, secrets=secrets)
    text = _ResultText.of(result, secrets)
    if not result.is_error and (result.subtype in (None, "success")):
        if not (result.result or "").strip():
            return text.failure(FailureClass.EMPTY_OUTPUT, "cli:empty_result")
        return None
    return (
        _api_failure(result, text, rate_limit=rate_limit, now=now, secrets=secrets)
        or _turn_loop_failure(result, text)
        or _text_failure(result, text, now=now)
    )


@dataclass(frozen=True)
class _ResultText:
    """The result line's error text: ``raw`` to read, ``shown`` (clipped, redacted) for the operator."""

    raw: str
    shown: str

    @classmethod
    def of(cls, result: CliEvent, secrets: list[str]) -> _ResultText:
        raw = result.result or "; ".join(result.errors) or ""
        return cls(raw=raw, shown=redact(clip(raw or f"{result.subtype or 'error'}", 500), secrets))

    def failure(self, failure_class: FailureClass, signature: str, *, status: int | None = None,
                resume_at: float | None = None) -> Failure:
        return Failure(failure_class=failure_class, message=self.shown, http_status=status, resume_at=resume_at,
                       signature=signature)


def _api_failure(result: CliEvent, text: _ResultText, *, rate_limit: RateLimitInfo | None, now: float,
                 secrets: list[str]) -> Failure | None:
    """1. The API error, when the CLI says which."""
    status = result.api_error_status
    rejected = rate_limit if rate_limit is not None and rate_limit.status in (None, "rejected") else None
    if result.api_error == "usage_limit_reached" or (status == 429 and rejected is not None):
        return text.failure(FailureClass.RATE_LIMITED, f"cli:{result.api_error or 'rate_limit'}", status=status,
                            resume_at=_resume_at(rejected, text.raw, now))
    if status is None:
        return None
    body = json.dumps({"error": {"type": result.api_error_type or "", "message": text.raw}})
    failure = classify_http(status, body, {}, now, secrets=secrets)
    return failure.model_copy(update={"message": text.shown, "signature": f"cli:{failure.signature}"})


def _resume_at(rejected: RateLimitInfo | None, message_text: str, now: float) -> float:
    """When a rate limit lifts. The structured resetsAt is exact; the "resets 5:45pm" text is in the CLI's
    local zone, which we may not know, so it is only the fallback (read as UTC unless it names its zone)."""
    resume_at = parse_resets_at(rejected.resetsAt, now) if rejected else None
    if resume_at is None:
        resume_at = parse_resets_text(message_text, now)
    return resume_at or now + DEFAULT_RATE_LIMIT_PAUSE_S


def _turn_loop_failure(result: CliEvent, text: _ResultText) -> Failure | None:
    """2. How the turn loop ended."""
    reason = result.terminal_reason or ""
    if result.stop_reason == "refusal" or result.safety_stops:
        return text.failure(FailureClass.CONTENT_REFUSED, "cli:refusal")
    if reason == "prompt_too_long":
        return text.failure(FailureClass.CONTEXT_OVERFLOW, "cli:prompt_too_long")
    if reason == "budget_exhausted" or result.subtype == "error_max_budget_usd":
        return text.failure(FailureClass.BUDGET_EXCEEDED, "cli:max_budget_usd")
    if reason == "max_turns" or result.subtype == "error_max_turns":
        # The job's turn allowance is a budget too: park it rather than burn the same turns elsewhere.
        return text.failure(FailureClass.BUDGET_EXCEEDED, "cli:max_turns")
    return None


def _text_failure(result: CliEvent, text: _ResultText, *, now: float) -> Failure:
    """3. What the text says, by the one phrase table; 4. else whatever the subtype says."""
    hinted = classify_text(text.raw)
    if hinted == FailureClass.AUTH and "not logged in" in text.raw.lower():
        return text.failure(hinted, "cli:not_logged_in")
    if hinted == FailureClass.RATE_LIMITED:
        return text.failure(hinted, _TEXT_SIGNATURES[hinted], resume_at=_resume_at(None, text.raw, now))
    if hinted is not None:
        return text.failure(hinted, _TEXT_SIGNATURES.get(hinted, f"cli:{hinted}"))
    if not result.is_error and not (result.result or "").strip():
        return text.failure(FailureClass.EMPTY_OUTPUT, "cli:empty_result")
    # New to us, so the operator hears about it once.
    reason = result.terminal_reason or ""
    return text.failure(FailureClass.UNKNOWN,
                        f"cli:{result.subtype or 'error'}:{reason or 'none'}:{normalise_signature(text.raw)}")


def _no_result(*, timed_out: bool, exit_code: int | None, stderr: str, secrets: list[str]) -> Failure:
    detail = redact(clip(stderr, 300), secrets)
    if timed_out:
        return Failure(failure_class=FailureClass.TIMEOUT, message="killed: no result before the timeout",
                       signature="cli:killed_timeout")
    if classify_text(stderr) == FailureClass.AUTH:
        return Failure(failure_class=FailureClass.AUTH, message=detail or "not logged in",
                       signature="cli:not_logged_in")
    return Failure(failure_class=FailureClass.UNKNOWN,
                   message=f"exited with code {exit_code} without a result" + (f": {detail}" if detail else ""),
                   signature=f"cli:no_result:exit_{exit_code}")


# --- The backend ---------------------------------------------------------------------------------------------

class ClaudeCliBackend(CliBackend):
    """``claude -p`` per job, in the worker sandbox. ``env`` stands for the engine's environment."""

    tool = "claude"
    binary_env = BINARY_ENV
    signature = "cli"

    config_dir_env = "CLAUDE_CONFIG_DIR"
    config_dir_name = ".claude"
    # The CLI's own settings and credentials; a credential another backend names as its key is still held back.
    own_vars = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "DISABLE_AUTOUPDATER",
                "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "DISABLE_NON_ESSENTIAL_MODEL_CALLS")
    own_prefixes = ("CLAUDE_CODE_",)

    def _api_key(self, env: dict[str, str]) -> str | None:
        if not self.config.api_key_env:
            return None
        return env.get(self.config.api_key_env) or os.environ.get(self.config.api_key_env) or None

    def credentials(self, env: dict[str, str]) -> dict[str, str]:
        # The engine does the retrying: the CLI's own (ten over about three minutes) would hold a 429 or a 529
        # where another backend could answer at once. An operator's own setting is kept.
        values = {"CLAUDE_CODE_MAX_RETRIES": env.get("CLAUDE_CODE_MAX_RETRIES") or "0"}
        key = self._api_key(env)
        if key:
            # API-key mode: the configured variable becomes the one the CLI reads.
            values["ANTHROPIC_API_KEY"] = key
        if self.config.base_url:
            values["ANTHROPIC_BASE_URL"] = self.config.base_url
        return values

    def build_command(self, binary: str, request: BackendRequest) -> list[str]:
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        if self.config.model:
            argv += ["--model", self.config.model]
        if request.system:
            argv += ["--append-system-prompt", request.system]
        if request.max_turns is not None:
            argv += ["--max-turns", str(request.max_turns)]
        if request.permission_mode:
            argv += ["--permission-mode", request.permission_mode]
        if request.allowed_tools:
            # One comma-joined value: the flag is variadic and would otherwise swallow the prompt.
            argv += ["--allowedTools", ",".join(request.allowed_tools)]
        if request.max_budget_usd is not None:
            argv += ["--max-budget-usd", f"{request.max_budget_usd:g}"]
        if request.session_id:
            argv += ["--resume", request.session_id]
        if request.workspace is not None:  # the folders besides its working directory that it may write
            argv += [f"--add-dir={p}" for p in worker_folders(request, request.workspace.resolve())[1:]]
        argv += list(self.config.extra_args)
        # "--" ends the options, so a prompt that starts with "-" stays a prompt.
        return [*argv, "--", request.prompt]

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        env = self.child_env()
        secrets = [k for k in (env.get("ANTHROPIC_API_KEY"), env.get("CLAUDE_CODE_OAUTH_TOKEN")) if k]
        state = StreamState()
        on_line = event_handler(parse_event, state.feed, describe_event, lambda event: event.type == "result",
                                Progress(progress, secrets))
        return await self._run_process(request, env=env, secrets=secrets, on_line=on_line,
                                       finish=lambda outcome: self._finish(state, outcome, secrets))

    def _finish(self, state: StreamState, outcome: ProcessOutcome, secrets: list[str]) -> BackendResult:
        return result_from_stream(state, now=self._clock.now(), timed_out=outcome.timed_out,
                                  exit_code=outcome.exit_code, stderr=outcome.stderr_tail, secrets=secrets,
                                  subscription=self.config.subscription)

    async def check_credentials(self) -> CredentialStatus:
        """Binary present and runnable, its version, and a credential the CLI can use. No network."""
        binary = self.binary()
        if binary is None:
            return CredentialStatus(ok=False, message="claude binary not found (config.binary, "
                                                      f"${BINARY_ENV} or PATH)")
        version = await _version(binary, self.version_env())
        if version is None:
            return CredentialStatus(ok=False, message=f"{binary} --version failed")
        env = self.child_env()
        if self.config.api_key_env:
            if not self._api_key(self._base_env()):
                return CredentialStatus(ok=False, message=f"claude {version}: ${self.config.api_key_env} is not set")
            return CredentialStatus(ok=True, message=f"claude {version}, API key from ${self.config.api_key_env}")
        if env.get("ANTHROPIC_API_KEY") or env.get("CLAUDE_CODE_OAUTH_TOKEN"):
            return CredentialStatus(ok=True, message=f"claude {version}, credentials from the environment")
        return _oauth_status(version, self.config_dir())


async def _version(binary: str, env: dict[str, str]) -> str | None:
    output = await version_output(binary, env)
    if output is None:
        return None
    exit_code, out = output
    match = re.search(r"\d+\.\d+\.\d+", out)
    return match.group(0) if exit_code == 0 and match else None


class _OAuth(Loose):
    expiresAt: float | None = None


class _CredentialsFile(Loose):
    claudeAiOauth: _OAuth | None = None


def _oauth_status(version: str, config_dir: Path) -> CredentialStatus:
    """Subscription mode: the CLI keeps its OAuth login in ``.credentials.json`` (Linux)."""
    path = config_dir / ".credentials.json"
    try:
        creds = _CredentialsFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return CredentialStatus(ok=False, message=f"claude {version}: not logged in (no {path.name} in "
                                                  f"{config_dir}; run `claude` and /login, or set an API key)")
    if creds.claudeAiOauth is None:
        return CredentialStatus(ok=False, message=f"claude {version}: no OAuth login in {path}")
    expires = creds.claudeAiOauth.expiresAt
    expires_at = expires / 1000.0 if expires and expires > 1e12 else expires
    # The CLI refreshes an expired access token itself; the expiry is reported so the pulse can warn early.
    return CredentialStatus(ok=True, message=f"claude {version}, logged in (OAuth)", expires_at=expires_at)
