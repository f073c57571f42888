"""Plumbing shared by the HTTP backends (``anthropic``, ``openai``): client, progress, error results.

``Progress`` and ``elapsed_ms`` serve the CLI backends too (through ``engine.backends.cli_common``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from engine.backends.base import BackendResult, CredentialStatus, ProgressCallback
from engine.clock import Clock
from engine.failures import Failure, FailureClass, classify_exception, classify_http
from engine.redaction import redact

log = logging.getLogger(__name__)

# Seconds between progress calls while tokens stream in: often enough for the lease heartbeat, rarely
# enough not to flood the progress card.
PROGRESS_INTERVAL_S = 1.0
_CONNECT_TIMEOUT_S = 10.0
_PROBE_TIMEOUT_S = 15.0


def make_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    # Timeouts are set per request (from the job); follow no redirects: an API that redirects is misconfigured.
    return httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=None)


def request_timeout(timeout_s: float) -> httpx.Timeout:
    # The read timeout is per chunk, so a streaming answer also needs the overall deadline the caller enforces.
    return httpx.Timeout(timeout_s, connect=min(_CONNECT_TIMEOUT_S, timeout_s))


class Progress:
    """Calls the job's progress callback, at most once per interval unless forced, never raising."""

    def __init__(self, callback: ProgressCallback | None, secrets: list[str]) -> None:
        self._callback = callback
        self._secrets = secrets
        self._last = 0.0

    async def __call__(self, text: str, *, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        try:
            await self._callback(redact(text, self._secrets))
        except Exception:  # a broken progress card must not fail the call
            log.warning("progress callback failed", exc_info=True)


async def error_result(response: httpx.Response, now: float, secrets: list[str], model: str) -> BackendResult:
    body = (await response.aread()).decode("utf-8", "replace")
    failure = classify_http(response.status_code, body, response.headers, now, secrets=secrets)
    return BackendResult(model=model, failure=failure)


def exception_result(exc: BaseException, secrets: list[str], model: str) -> BackendResult:
    return BackendResult(model=model, failure=classify_exception(exc, secrets=secrets))


def missing_key_result(env_name: str | None, model: str) -> BackendResult:
    return BackendResult(model=model, failure=Failure(
        failure_class=FailureClass.AUTH, message=f"no API key: ${env_name} is not set",
        signature="config:missing_api_key"))


def judge_answer(result: BackendResult, *, refusal: str | None, stop: str | None, api: str) -> BackendResult:
    """A well-formed answer can still fail: a refusal (another family may answer) or nothing usable."""
    if refusal is not None:
        failure = Failure(failure_class=FailureClass.CONTENT_REFUSED, message=refusal[:500],
                          signature=f"{api}:refusal:{stop}")
    elif not result.text.strip():
        failure = Failure(failure_class=FailureClass.EMPTY_OUTPUT, message=f"empty answer (stop reason {stop})",
                          signature=f"{api}:empty:{stop}")
    else:
        return result
    return result.model_copy(update={"failure": failure})


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


async def run_with_deadline(call: Callable[[], Awaitable[BackendResult]], *, timeout_s: float, secrets: list[str],
                            model: str) -> BackendResult:
    """One API call under the job's overall deadline; a transport error or the deadline becomes a classified
    failure. The result carries its latency."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            result = await call()
    except (httpx.HTTPError, TimeoutError) as exc:
        result = exception_result(exc, secrets, model)
    return result.model_copy(update={"latency_ms": elapsed_ms(started)})


async def probe_credentials(client: httpx.AsyncClient, url: str, *, headers: dict[str, str], secrets: list[str],
                            clock: Clock, params: dict[str, Any] | None = None,
                            accepted: str = "API key accepted") -> CredentialStatus:
    """``GET url`` with the key: 200 is ok (``accepted``); anything else says why, as the failure classifier
    words it."""
    try:
        response = await client.get(url, params=params, headers=headers, timeout=request_timeout(_PROBE_TIMEOUT_S))
    except httpx.HTTPError as exc:
        return CredentialStatus(ok=False, message=redact(f"unreachable: {type(exc).__name__}: {exc}", secrets))
    if response.status_code == 200:
        return CredentialStatus(ok=True, message=accepted)
    failure = classify_http(response.status_code, response.text, response.headers, clock.now(), secrets=secrets)
    return CredentialStatus(ok=False, message=failure.message)
