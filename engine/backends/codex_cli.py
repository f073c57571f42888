"""The ``codex_cli`` backend: one ``codex exec --json`` process per job, its JSONL events parsed line by line.

Event shapes, as the pinned ``@openai/codex@0.169.0`` prints them (tests/integration/test_codex_real.py runs
it against a local Responses API): ``thread.started`` (thread_id, the session to resume), ``turn.started``,
``item.started|updated|completed`` (items: agent_message, reasoning, command_execution, file_change,
mcp_tool_call, web_search, todo_list, error), ``turn.completed`` (usage: input_tokens, cached_input_tokens,
cache_write_input_tokens, output_tokens, reasoning_output_tokens), ``turn.failed`` and ``error`` (a message
only). Unknown events and fields are ignored. Errors carry only text, so classification reads the text.

What the real binary taught us:

- A top-level ``error`` event is not the end: ``Reconnecting... 1/5 (...429...)`` is printed before the CLI's
  own retry, which may then succeed. A completed turn with an answer wins over every earlier error; only
  ``turn.failed`` (or no completed turn) is a failure.
- On ``codex exec resume`` the usage of ``turn.completed`` is the running total of the whole thread, so the
  run's own usage is the difference from the total the previous run reported (``BackendRequest.session_usage``,
  kept by the engine; the new total goes back as ``BackendResult.session_total``).
- Its own retries (``request_max_retries``, ``stream_max_retries``, up to minutes for one 429) are set to 0
  through a provider of our own (``model_providers.switchboard``: the built-in ``openai`` one cannot be
  overridden), so a 429 comes back at once and the engine reroutes. That needs an API key or a ``base_url``;
  with a ChatGPT login (``auth.json``) the built-in provider and its retries stay.
- A plain 429 prints no reset time ("exceeded retry limit, last status: 429 Too Many Requests"); a ChatGPT
  usage limit prints "try again at 8:06 PM" (the CLI's local time), read here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
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
from engine.backends.http_common import Progress, make_client, probe_credentials
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
from engine.ratelimit import latest, parse_retry_text, retry_hint
from engine.redaction import redact
from engine.settings import BackendConfig

BINARY_ENV = "SWITCHBOARD_CODEX_BIN"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Our permission modes (Claude Code's names, used per job type) mapped to codex sandbox modes.
_SANDBOX = {"acceptEdits": "workspace-write", "bypassPermissions": "workspace-write", "default": "read-only",
            "plan": "read-only"}
# Only numbers that are plainly HTTP statuses: "status: 401", "status 503", "429 Too Many Requests".
_STATUS_IN_TEXT = re.compile(
    r"status(?:\s*code)?[:=]?\s*([45]\d\d)\b|\b([45]\d\d)\s+(?:Unauthorized|Forbidden|Too Many Requests|"
    r"Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout|Bad Request|Payment Required)")


class CodexUsage(Loose):
    """As ``turn.completed`` reports it: cached and cache-write tokens are counted inside ``input_tokens``,
    reasoning tokens inside ``output_tokens``."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0

    def to_usage(self) -> Usage:
        cached = min(self.cached_input_tokens, self.input_tokens)
        written = min(self.cache_write_input_tokens, self.input_tokens - cached)
        # Ours are disjoint: fresh input, cache reads and cache writes priced apart.
        return Usage(input_tokens=self.input_tokens - cached - written, output_tokens=self.output_tokens,
                     cache_read_tokens=cached, cache_write_tokens=written)


def usage_since(total: Usage, before: Usage | None) -> Usage:
    """This run's usage from the thread's running total and the total the previous run reported. A total
    below the previous one (a thread compacted or started anew) counts as this run's own."""
    if before is None:
        return total
    fields = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    if any(getattr(total, f) < getattr(before, f) for f in fields):
        return total
    return Usage(**{f: getattr(total, f) - getattr(before, f) for f in fields})


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
    """What a codex run has shown so far.

    ``errors`` are the top-level ``error`` events (non-fatal on their own: the CLI prints one before each of its
    retries); ``failed`` is the ``turn.failed`` text, the end of the turn. ``total`` is the thread's running
    total as the last ``turn.completed`` reported it.
    """

    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.last_message = ""
        self.total: Usage | None = None
        self.completed = False
        self.failed: str | None = None
        self.errors: list[str] = []
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
                self.total = event.usage.to_usage()
        elif event.type == "turn.failed":
            self.failed = _error_text(event) or "turn failed"
        elif event.type == "error":
            self.errors.append(_error_text(event) or "error")

    @property
    def error(self) -> str | None:
        """The text a failed run is classified by: the turn's failure, else the last error event."""
        return self.failed or (self.errors[-1] if self.errors else None)


# The signature of a failure known only by its text (engine.failures.FAILURE_PHRASES gives the class).
_TEXT_SIGNATURES = {
    FailureClass.AUTH: "codex:auth",
    FailureClass.QUOTA: "codex:quota",
    FailureClass.CONTEXT_OVERFLOW: "codex:context_overflow",
    FailureClass.OVERLOADED: "codex:disconnected",
    FailureClass.TIMEOUT: "codex:timeout",
    FailureClass.CONTENT_REFUSED: "codex:refusal",
}


# The CLI's own log line for each HTTP answer (``RUST_LOG=codex_http_client::client=debug``, set by the backend):
# "Request completed method=POST url=... status=429 Too Many Requests headers={"retry-after": "37", ...}".
_ANSWER_IN_LOG = re.compile(r"Request completed .*?status=(\d{3})[^\n]*? headers=(\{[^\n]*?\})(?: version=|\s*$)",
                            re.MULTILINE)
LOG_FILTER = "error,codex_http_client::client=debug"


def last_answer_headers(stderr: str) -> dict[str, str]:
    """The headers of the last HTTP error answer the CLI logged (its text never carries a retry-after)."""
    for match in reversed(list(_ANSWER_IN_LOG.finditer(stderr))):
        if int(match.group(1)) < 400:
            continue
        try:
            headers = json.loads(match.group(2))
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
    return {}


def classify_codex_error(message: str, now: float, headers: Mapping[str, str] | None = None) -> Failure:
    """Codex errors are text only: a rate limit by its phrase, else a status code in the text, else the class
    of the first known phrase (engine.failures.FAILURE_PHRASES). ``headers``: the failed answer's, from the
    CLI's log, for the reset time its text leaves out."""
    headers = headers or {}
    hinted = classify_text(message)
    if hinted == FailureClass.RATE_LIMITED:
        resume_at = latest([parse_retry_text(message, now), retry_hint(headers, None, now)])
        resume_at = resume_at or now + DEFAULT_RATE_LIMIT_PAUSE_S
        return Failure(failure_class=FailureClass.RATE_LIMITED, message=message[:500], resume_at=resume_at,
                       http_status=429, signature="codex:rate_limited")
    match = _STATUS_IN_TEXT.search(message)
    if match:
        status = int(match.group(1) or match.group(2))
        body = json.dumps({"error": {"message": message}})
        failure = classify_http(status, body, headers, now)
        return failure.model_copy(update={"message": message[:500], "signature": f"codex:{failure.signature}"})
    if hinted is not None:
        return Failure(failure_class=hinted, message=message[:500],
                       signature=_TEXT_SIGNATURES.get(hinted, f"codex:{hinted}"))
    return Failure(failure_class=FailureClass.UNKNOWN, message=message[:500],
                   signature=f"codex:{normalise_signature(message)}")


def codex_result(state: CodexState, *, now: float, timed_out: bool, exit_code: int | None, stderr: str,
                 config: BackendConfig, secrets: list[str], session_usage: Usage | None = None) -> BackendResult:
    """The run's result. A completed turn with an answer is a success whatever errors came before it (the
    CLI's own recovered retries); its usage is this run's share of the thread's running total."""
    usage = usage_since(state.total, session_usage) if state.total is not None else Usage()
    result = BackendResult(text=state.last_message, usage=usage, cost_usd=price_usage(config, usage),
                           session_id=state.thread_id, model=config.model, session_total=state.total)
    answered = state.completed and state.failed is None
    if answered and state.last_message.strip():
        return result
    if answered:
        failure = Failure(failure_class=FailureClass.EMPTY_OUTPUT, message="no agent message",
                          signature="codex:empty")
    elif state.failed is not None:
        failure = classify_codex_error(state.failed, now, last_answer_headers(stderr))
    elif timed_out:
        failure = Failure(failure_class=FailureClass.TIMEOUT, message="killed: no result before the timeout",
                          signature="codex:killed_timeout")
    elif state.errors:
        failure = classify_codex_error(state.errors[-1], now, last_answer_headers(stderr))
    else:
        detail = clip(stderr, 300)
        failure = classify_codex_error(detail, now) if detail else Failure(
            failure_class=FailureClass.UNKNOWN, message=f"exited with code {exit_code} without finishing",
            signature=f"codex:no_result:exit_{exit_code}")
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
        # Its log of each HTTP answer (on stderr) is where a 429's retry-after can be read: its text has none.
        values = {"RUST_LOG": env.get("RUST_LOG") or LOG_FILTER}
        if self.config.api_key_env:
            key = env.get(self.config.api_key_env) or os.environ.get(self.config.api_key_env)
            if key:
                values["OPENAI_API_KEY"] = key
        return values

    def _api(self) -> tuple[str, str] | None:
        """(base URL, the variable holding the key) when the CLI talks to an API with a key; None with a
        ChatGPT login, whose built-in provider we cannot reconfigure."""
        env = self._base_env()
        key_var = next((v for v in ("OPENAI_API_KEY", "CODEX_API_KEY") if self.child_env().get(v)), None)
        if key_var is None and not self.config.base_url:
            return None
        base = self.config.base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return base.rstrip("/"), key_var or "OPENAI_API_KEY"

    def provider_args(self) -> list[str]:
        """A provider of our own with the CLI's retries off, so a 429 or a dropped stream comes back at once
        and the engine decides (reroute, pause until the reset)."""
        api = self._api()
        if api is None:
            return []
        base, key_var = api
        provider = (f'{{name="switchboard", base_url={json.dumps(base)}, env_key="{key_var}", '
                    'wire_api="responses", request_max_retries=0, stream_max_retries=0}')
        return ["-c", 'model_provider="switchboard"', "-c", f"model_providers.switchboard={provider}"]

    def build_command(self, binary: str, request: BackendRequest) -> list[str]:
        argv = [binary, "exec", "--json", "--skip-git-repo-check", *self.provider_args()]
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

    def native_dirs(self) -> list[Path]:
        """npm's ``codex`` is a Node launcher that runs the native binary of a sibling package
        (``@openai/codex-linux-x64``): the sandbox must show that package too."""
        binary = self.binary()
        if binary is None:
            return []
        package = Path(os.path.realpath(binary)).parent.parent  # .../@openai/codex/bin/codex.js
        if package.name != "codex" or not (package / "package.json").is_file():
            return []
        return sorted(p for p in package.parent.glob("codex-*") if p.is_dir())

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        request = request.model_copy(update={"read_dirs": [*request.read_dirs, *self.native_dirs()]})
        env = self.child_env()
        secrets = [v for v in (env.get("OPENAI_API_KEY"), env.get("CODEX_API_KEY")) if v]
        state = CodexState()
        on_line = event_handler(parse_codex_event, state.feed, describe_codex_event,
                                lambda event: event.type in ("turn.completed", "turn.failed"),
                                Progress(progress, secrets))

        def finish(outcome: ProcessOutcome) -> BackendResult:
            return codex_result(state, now=self._clock.now(), timed_out=outcome.timed_out,
                                exit_code=outcome.exit_code, stderr=outcome.stderr_tail, config=self.config,
                                secrets=secrets, session_usage=request.session_usage)

        return await self._run_process(request, env=env, secrets=secrets, on_line=on_line, finish=finish)

    async def check_credentials(self) -> CredentialStatus:
        """The binary and its version, then one cheap authenticated request (``GET /models``) when the CLI uses
        an API key. A ChatGPT login cannot be checked without running a job: that is said, not passed."""
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
        api = self._api()
        key = env.get(api[1]) if api else None
        if api is not None and key:
            async with make_client(None) as client:
                status = await probe_credentials(client, f"{api[0]}/models", headers={"authorization": f"Bearer {key}"},
                                                 secrets=[key], clock=self._clock)
            return status.model_copy(update={"message": f"{version}: {status.message}"})
        codex_home = self.config_dir()
        if (codex_home / "auth.json").is_file():
            return CredentialStatus(ok=True, checked=False,
                                    message=f"{version}, ChatGPT login ({codex_home / 'auth.json'}), not checked")
        return CredentialStatus(ok=False, message=f"{version}: not logged in (no auth.json in {codex_home})")
