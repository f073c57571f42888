"""Plumbing shared by the HTTP backends (``anthropic``, ``openai``): client, progress, error results.

``Progress`` and ``elapsed_ms`` serve the CLI backends too (through ``engine.backends.cli_common``).
"""

from __future__ import annotations

import logging
import time

import httpx

from engine.backends.base import BackendResult, ProgressCallback
from engine.failures import Failure, FailureClass, classify_exception, classify_http, redact

log = logging.getLogger(__name__)

# Seconds between progress calls while tokens stream in: often enough for the lease heartbeat, rarely
# enough not to flood the progress card.
PROGRESS_INTERVAL_S = 1.0
_CONNECT_TIMEOUT_S = 10.0


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


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
