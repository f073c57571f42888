"""Redaction: one redactor for every exit, so a secret never reaches the database, a file, the operator's chat,
another vendor's model or a log.

Two layers, applied together:

- every configured secret by value: each variable ``Settings.secret_env_names`` names (each backend's key, the
  Telegram bot token, the webhook secret, the embedder's key), read once from the environment when the
  ``Redactor`` is built, and the Telegram secrets ``Settings`` holds as ``SecretStr``;
- patterns of tokens and keys of any length: ``Bearer ...``, ``api_key=...`` and its kin, ``sk-...``, Google,
  GitHub and Slack keys, JWTs, and Telegram bot tokens (``<digits>:<20 or more token characters>``), which
  catch a key the configuration does not know (a worker's own, one pasted into a prompt).

The composition root (``bot.app``) builds one ``Redactor`` from ``Settings`` and hands it to the engine through
``open_services`` (the engine applies it to what every backend returns and is sent, and to every ``Completion``
before it is written) and to the log filter (``redacting_logs``). ``redact(text, secrets)`` is the same masking
for callers that hold their own secrets (a backend masking its key in an error message).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from engine.backends.base import Backend, BackendRequest, BackendResult, CredentialStatus, ProgressCallback
    from engine.settings import BackendConfig, Settings

__all__ = ["MASK", "RedactingBackend", "RedactingFilter", "Redactor", "redact", "redacting_logs"]

MASK = "***"
# Secrets shorter than this are not masked by value: masking "x" everywhere would destroy the message, and a
# real key is never that short.
_MIN_SECRET_CHARS = 4

_KEY_NAMES = r"x-api-key|api[_-]?key|apikey|authorization|access[_-]?token|refresh[_-]?token|auth[_-]?token|" \
             r"client[_-]?secret|secret[_-]?key|secret|password|passwd|private[_-]?key"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(bearer\s+)(?!\*\*\*)[A-Za-z0-9._~+/=\-]{8,}"), r"\1" + MASK),
    # A named key with ":" or "=" (JSON, headers, YAML, env files); the value is masked whatever its length.
    (re.compile(rf"(?i)\b((?:{_KEY_NAMES})[\"']?\s*[:=]\s*[\"']?)"
                r"(?!\*\*\*|(?i:bearer)\b)[^\s\"',;}&]{6,}"), r"\1" + MASK),
    # Bare "key=" and "token=" only in the query-string form (no space): "key: idea" is prose.
    (re.compile(r"(?i)(?<![\w-])((?:key|token|access_token|sig|signature)=)(?!\*\*\*)[^\s\"',;}&]{8,}"),
     r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
    # Telegram bot tokens of any length, also inside a URL path (".../bot123456789:AA.../getMe"). The tail is
    # random base64url, so it has a capital letter; "sha256:<hex>" and "file.py:12:snake_name" are no tokens.
    (re.compile(r"(?<![A-Za-z0-9])(?:bot)?\d+:(?=[a-z0-9_\-]*[A-Z])[A-Za-z0-9_\-]{20,}(?![A-Za-z0-9_\-])"), MASK),
)

M = TypeVar("M", bound=BaseModel)


def _value(secret: str | SecretStr | None) -> str:
    return (secret.get_secret_value() if isinstance(secret, SecretStr) else secret) or ""


def redact(text: str, secrets: Iterable[str | SecretStr | None] = ()) -> str:
    """Mask every given secret value and anything that looks like a bearer token or an API key."""
    out = text
    values = sorted({v for v in map(_value, secrets) if len(v) >= _MIN_SECRET_CHARS}, key=len, reverse=True)
    for value in values:  # longest first: a secret that contains another is masked whole
        out = out.replace(value, MASK)
    for pattern, replacement in _SECRET_PATTERNS:
        out = pattern.sub(replacement, out)
    return out


@dataclass(frozen=True)
class Redactor:
    """Masks the configured secrets (by value) and token patterns in text, models and completions."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Redactor:
        """Every secret the configuration names (``Settings.secret_env_names``: backend keys, the Telegram token,
        the webhook secret, the embedder's key) read from ``environ`` (default: this process's environment), and
        the Telegram secrets ``Settings`` holds."""
        env = os.environ if environ is None else environ
        values = {env.get(name, "") for name in settings.secret_env_names()}
        values |= {_value(settings.telegram.bot_token), _value(settings.telegram.webhook_secret)}
        return cls(tuple(sorted((v for v in values if len(v) >= _MIN_SECRET_CHARS), key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        return redact(text, self.secrets)

    def model(self, value: M) -> M:
        """A copy of ``value`` with every string in it (fields, lists, dicts, nested models) redacted."""
        scrubbed: M = self._scrub(value)
        return scrubbed

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, Enum):  # a StrEnum is a str, but its value is no secret and must stay an enum
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, BaseModel):
            fields = type(value).model_fields
            return value.model_copy(update={name: self._scrub(getattr(value, name)) for name in fields})
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(item) for item in value)
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        return value

    def backend(self, backend: Backend) -> RedactingBackend:
        return RedactingBackend(backend, self)


class RedactingBackend:
    """A backend whose traffic passes the redactor both ways: the request it sends to a vendor (the prompt and
    system text, a review prompt holding another model's work included), and the result, failure message and
    progress lines it brings back. Everything downstream (result_text, result.md, the review prompt, outbox
    rows, attempts) starts from redacted text."""

    def __init__(self, inner: Backend, redactor: Redactor) -> None:
        self._inner = inner
        self._redact = redactor

    @property
    def config(self) -> BackendConfig:
        return self._inner.config

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        outgoing = request.model_copy(update={"prompt": self._redact(request.prompt),
                                              "system": self._redact(request.system)})

        result = await self._inner.run(outgoing, None if progress is None else self._progress(progress))
        return self._redact.model(result)

    def _progress(self, progress: ProgressCallback) -> ProgressCallback:
        async def redacted(line: str) -> None:
            await progress(self._redact(line))

        return redacted

    async def check_credentials(self) -> CredentialStatus:
        return self._redact.model(await self._inner.check_credentials())

    async def aclose(self) -> None:
        await self._inner.aclose()


class RedactingFilter(logging.Filter):
    """Redacts a log record's message, arguments and traceback text in place, so every handler sees the same
    redacted record. Installed on handlers (a logger's own filters do not see records of its children)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


@contextmanager
def redacting_logs(redactor: Redactor, logger: logging.Logger | None = None) -> Iterator[RedactingFilter]:
    """Install a ``RedactingFilter`` on every handler of ``logger`` (default: the root logger) for the duration.

    Every record of the process reaches the root handlers, so this covers every module's logger."""
    target = logger or logging.getLogger()
    log_filter = RedactingFilter(redactor)
    handlers = list(target.handlers)
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield log_filter
    finally:
        for handler in handlers:
            handler.removeFilter(log_filter)
