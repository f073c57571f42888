"""The ``codex_cli`` backend: one ``codex exec --json`` process per job, its JSONL events parsed line by line.

Event shapes follow ``codex-rs/exec/src/exec_events.rs`` in openai/codex: ``thread.started`` (thread_id, the
session to resume), ``turn.started``, ``item.started|updated|completed`` (items: agent_message, reasoning,
command_execution, file_change, mcp_tool_call, web_search, todo_list, error), ``turn.completed`` (usage with
input_tokens, cached_input_tokens, output_tokens), ``turn.failed`` and ``error`` (a message only). Unknown
events and fields are ignored. Errors carry only text, so classification reads the text.

Not yet checked against a real ``codex`` binary: see tests/unit/test_codex_parser.py.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pydantic import Field

from engine.backends.base import BackendRequest, BackendResult, CredentialStatus, ProgressCallback, Usage, price_usage
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
from engine.backends.wire import Loose
from engine.failures import (
    DEFAULT_RATE_LIMIT_PAUSE_S,
    Failure,
    FailureClass,
    classify_http,
    classify_text,
    normalise_signature,
)
from engine.ratelimit import parse_resets_text
from engine.redaction import redact
from engine.settings import BackendConfig

BINARY_ENV = "SWITCHBOARD_CODEX_BIN"
# Our permission modes (Claude Code's names, used per job type) mapped to codex sandbox modes.
_SANDBOX = {"acceptEdits": "workspace-write", "bypassPermissions": "workspace-write", "default": "read-only",
            "plan": "read-only"}
# Only numbers that are plainly HTTP statuses: "status: 401", "status 503", "429 Too Many Requests".
_STATUS_IN_TEXT = re.compile(
    r"status(?:\s*code)?[:=]?\s*([45]\d\d)\b|\b([45]\d\d)\s+(?:Unauthorized|Forbidden|Too Many Requests|"
    r"Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout|Bad Request|Payment Required)")
_RETRY_IN = re.compile(r"try again in\s+((?:\d+\s*(?:days?|hours?|minutes?|mins?|seconds?|secs?)[\s,and]*)+)",
                       re.IGNORECASE)
_RETRY_AT = re.compile(r"try again at\s+([0-9]{1,2}(?::[0-9]{2})?\s*[ap]\.?m\.?)", re.IGNORECASE)
_UNIT_S = {"day": 86400, "hour": 3600, "minute": 60, "min": 60, "second": 1, "sec": 1}


class CodexUsage(Loose):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0


class CodexErrorBody(Loose):
    message: str = ""


class CodexItem(Loose):
    id: str = ""
    type: str = ""
    text: str | None = None
    command: str | None = None
    status: str | None = None
    exit_code: int | None = None
    changes: list[dict[str, Any]] = Field(default_factory=list)
    server: str | None = None
    tool: str | None = None
    query: str | None = None
    message: str | None = None


class CodexEvent(Loose):
    type: str = ""
    thread_id: str | None = None
    usage: CodexUsage | None = None
    item: CodexItem | None = None
    # turn.failed has {"error": {"message": ...}}; the top-level error event has {"message": ...}.
    error: CodexErrorBody | None = None
    message: str | None = None


def parse_codex_event(line: str) -> CodexEvent | None:
    return parse_line(CodexEvent, line)


def describe_codex_event(event: CodexEvent) -> str:
    if event.type == "thread.started":
        return "started"
    if event.type.startswith("item.") and event.item is not None:
        item = event.item
        if item.type == "agent_message":
            return clip(item.text or "message")
        if item.type == "command_execution":
            return clip(f"$ {item.command or '?'}" + (f" ({item.status})" if item.status else ""))
        if item.type == "file_change":
            return clip("files: " + ", ".join(str(c.get("path", "?")) for c in item.changes))
        if item.type == "mcp_tool_call":
            return f"tool {item.server or '?'}.{item.tool or '?'}"
        if item.type == "web_search":
            return clip(f"search {item.query or ''}")
        return item.type or event.type
    if event.type == "turn.completed":
        return "turn completed"
    if event.type in ("turn.failed", "error"):
        return clip(f"error: {_error_text(event)}")
    return event.type or "event"


def _error_text(event: CodexEvent) -> str:
    return (event.error.message if event.error else "") or event.message or ""


class CodexState:
    """What a codex run has shown so far."""

    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.last_message = ""
        self.usage = Usage()
        self.completed = False
        self.error: str | None = None
        self.item_errors: list[str] = []

    def feed(self, event: CodexEvent) -> None:
        if event.type == "thread.started" and event.thread_id:
            self.thread_id = event.thread_id
        elif event.type == "item.completed" and event.item is not None:
            if event.item.type == "agent_message" and event.item.text is not None:
                self.last_message = event.item.text
            elif event.item.type == "error":
                self.item_errors.append(event.item.message or "")
        elif event.type == "turn.completed":
            self.completed = True
            if event.usage is not None:
                u = event.usage
                cached = min(u.cached_input_tokens, u.input_tokens)
                # OpenAI counts cached tokens inside input_tokens; ours are disjoint.
                self.usage = Usage(
                    input_tokens=self.usage.input_tokens + u.input_tokens - cached,
                    output_tokens=self.usage.output_tokens + u.output_tokens,
                    cache_read_tokens=self.usage.cache_read_tokens + cached)
        elif event.type in ("turn.failed", "error"):
            self.error = _error_text(event) or self.error or event.type


# The signature of a failure known only by its text (engine.failures.FAILURE_PHRASES gives the class).
_TEXT_SIGNATURES = {
    FailureClass.AUTH: "codex:auth",
    FailureClass.QUOTA: "codex:quota",
    FailureClass.CONTEXT_OVERFLOW: "codex:context_overflow",
    FailureClass.OVERLOADED: "codex:disconnected",
    FailureClass.TIMEOUT: "codex:timeout",
    FailureClass.CONTENT_REFUSED: "codex:refusal",
}


def classify_codex_error(message: str, now: float) -> Failure:
    """Codex errors are text only: a rate limit by its phrase, else a status code in the text, else the class
    of the first known phrase (engine.failures.FAILURE_PHRASES)."""
    hinted = classify_text(message)
    if hinted == FailureClass.RATE_LIMITED:
        resume_at = _retry_hint(message, now) or now + DEFAULT_RATE_LIMIT_PAUSE_S
        return Failure(failure_class=FailureClass.RATE_LIMITED, message=message[:500], resume_at=resume_at,
                       http_status=429, signature="codex:rate_limited")
    match = _STATUS_IN_TEXT.search(message)
    if match:
        status = int(match.group(1) or match.group(2))
        body = json.dumps({"error": {"message": message}})
        failure = classify_http(status, body, {}, now)
        return failure.model_copy(update={"message": message[:500], "signature": f"codex:{failure.signature}"})
    if hinted is not None:
        return Failure(failure_class=hinted, message=message[:500],
                       signature=_TEXT_SIGNATURES.get(hinted, f"codex:{hinted}"))
    return Failure(failure_class=FailureClass.UNKNOWN, message=message[:500],
                   signature=f"codex:{normalise_signature(message)}")


def _retry_hint(message: str, now: float) -> float | None:
    relative = _RETRY_IN.search(message)
    if relative:
        seconds = 0.0
        for amount, unit in re.findall(r"(\d+)\s*(day|hour|minute|min|second|sec)", relative.group(1), re.I):
            seconds += int(amount) * _UNIT_S[unit.lower()]
        if seconds:
            return now + seconds
    absolute = _RETRY_AT.search(message)
    if absolute:
        return parse_resets_text("resets " + absolute.group(1).replace(".", "").replace(" ", ""), now)
    return None


def codex_result(state: CodexState, *, now: float, timed_out: bool, exit_code: int | None, stderr: str,
                 config: BackendConfig, secrets: list[str]) -> BackendResult:
    result = BackendResult(text=state.last_message, usage=state.usage, cost_usd=price_usage(config, state.usage),
                           session_id=state.thread_id, model=config.model)
    failure: Failure | None = None
    if state.error is not None:
        failure = classify_codex_error(state.error, now)
    elif not state.completed:
        if timed_out:
            failure = Failure(failure_class=FailureClass.TIMEOUT, message="killed: no result before the timeout",
                              signature="codex:killed_timeout")
        else:
            detail = clip(stderr, 300)
            failure = classify_codex_error(detail, now) if detail else Failure(
                failure_class=FailureClass.UNKNOWN, message=f"exited with code {exit_code} without finishing",
                signature=f"codex:no_result:exit_{exit_code}")
    elif not state.last_message.strip():
        failure = Failure(failure_class=FailureClass.EMPTY_OUTPUT, message="no agent message",
                          signature="codex:empty")
    if failure is None:
        return result
    return result.model_copy(update={"failure": failure.model_copy(
        update={"message": redact(failure.message, secrets)})})


class CodexCliBackend(CliBackend):
    """``codex exec --json`` per job, in the worker sandbox. ``env`` stands for the engine's environment."""

    tool = "codex"
    binary_env = BINARY_ENV
    signature = "codex"

    config_dir_env = "CODEX_HOME"
    config_dir_name = ".codex"
    # The CLI's own credentials; one another backend names as its key is still held back.
    own_vars = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL")

    def credentials(self, env: dict[str, str]) -> dict[str, str]:
        if self.config.api_key_env:
            key = env.get(self.config.api_key_env) or os.environ.get(self.config.api_key_env)
            if key:
                return {"OPENAI_API_KEY": key}
        return {}

    def build_command(self, binary: str, request: BackendRequest) -> list[str]:
        argv = [binary, "exec", "--json", "--skip-git-repo-check"]
        if request.workspace is not None:
            cwd, *added = worker_folders(request, request.workspace)
            argv += ["--cd", str(cwd)] + [f"--add-dir={p}" for p in added]
        if self.config.model:
            argv += ["--model", self.config.model]
        sandbox = _SANDBOX.get(request.permission_mode or "")
        if sandbox:
            argv += ["--sandbox", sandbox]
        if request.system:
            # A JSON string is a valid TOML basic string, so the text arrives verbatim whatever it contains.
            argv += ["-c", f"developer_instructions={json.dumps(request.system)}"]
        argv += list(self.config.extra_args)
        if request.session_id:
            argv += ["resume", request.session_id]
        return [*argv, "--", request.prompt]

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        env = self.child_env()
        secrets = [v for v in (env.get("OPENAI_API_KEY"), env.get("CODEX_API_KEY")) if v]
        state = CodexState()
        on_line = event_handler(parse_codex_event, state.feed, describe_codex_event,
                                lambda event: event.type in ("turn.completed", "turn.failed"),
                                Progress(progress, secrets))

        def finish(outcome: ProcessOutcome) -> BackendResult:
            return codex_result(state, now=self._clock.now(), timed_out=outcome.timed_out,
                                exit_code=outcome.exit_code, stderr=outcome.stderr_tail, config=self.config,
                                secrets=secrets)

        return await self._run_process(request, env=env, secrets=secrets, on_line=on_line, finish=finish)

    async def check_credentials(self) -> CredentialStatus:
        binary = self.binary()
        if binary is None:
            return CredentialStatus(ok=False, message=f"codex binary not found (config.binary, ${BINARY_ENV} or PATH)")
        output = await version_output(binary, self.version_env())
        env = self.child_env()
        if output is None:
            return CredentialStatus(ok=False, message=f"{binary} --version failed")
        version = output[1].strip() or "unknown version"
        if self.config.api_key_env and not env.get("OPENAI_API_KEY"):
            return CredentialStatus(ok=False, message=f"{version}: ${self.config.api_key_env} is not set")
        if env.get("OPENAI_API_KEY") or env.get("CODEX_API_KEY"):
            return CredentialStatus(ok=True, message=f"{version}, API key from the environment")
        codex_home = self.config_dir()
        if (codex_home / "auth.json").is_file():
            return CredentialStatus(ok=True, message=f"{version}, logged in ({codex_home / 'auth.json'})")
        return CredentialStatus(ok=False, message=f"{version}: not logged in (no auth.json in {codex_home})")
