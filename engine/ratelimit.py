"""When may a rate-limited backend be asked again? Pure functions from provider signals to an epoch time.

Every function takes ``now`` (epoch seconds) and returns an absolute ``resume_at`` (epoch seconds) or
``None`` when the signal is absent or unreadable. Unreadable values are ignored rather than raised:
a malformed header must not turn a clean 429 into a crash.

Signals understood:

- ``retry-after-ms``: milliseconds (Anthropic and OpenAI SDK convention).
- ``retry-after``: delay seconds or an HTTP date (RFC 9110).
- ``x-ratelimit-reset-*``: OpenAI-style relative durations (``6m0s``, ``1.5s``, ``20ms``, ``1h2m``); a bare
  ``x-ratelimit-reset`` may also be an epoch in seconds or milliseconds (OpenRouter sends milliseconds).
- ``anthropic-ratelimit-*-reset``: RFC 3339 timestamps.
- the Claude CLI's ``rate_limit_event.rate_limit_info.resetsAt`` (epoch seconds) and its human text
  ``resets 5:45pm`` / ``resets 5pm (Europe/Paris)``.
- the same headers behind a proxy's prefix (LiteLLM: ``llm_provider-retry-after``; Azure: ``x-ms-retry-after-ms``);
- JSON body fields (``retry_after``, ``retry_after_ms``, Gemini's ``retryDelay: "37s"``, ChatGPT's
  ``resets_in_seconds`` / ``resets_at``, OpenRouter's upstream ``metadata.headers``) and the message text
  (``Please try again in 7.66s``, ``try again in 5 minutes``, ``try again at 8:06 PM``).

``retry_hint`` reads all of them for every HTTP backend (and the CLIs' texts). A ``*-reset-<bucket>`` header
counts only when its bucket is spent (its ``remaining`` is 0 or absent): the request bucket refilling in three
minutes does not matter when tokens ran out for eight seconds. When several hints remain the latest wins:
resuming early only earns another 429.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Anything further out than this is treated as a parsing accident, not a real reset (a year).
_MAX_DELAY_S = 366 * 24 * 3600.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s|d)")
_RESETS_TEXT = re.compile(
    r"resets\s+(?:(?:at|on)\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\s+(?P<day>\d{1,2}),?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>am|pm)?"
    r"(?:\s*\((?P<tz>[A-Za-z0-9_+\-/]+)\))?",
    re.IGNORECASE,
)
_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}


def _sane(resume_at: float | None, now: float) -> float | None:
    if resume_at is None or math.isnan(resume_at) or math.isinf(resume_at):
        return None
    if resume_at - now > _MAX_DELAY_S:
        return None
    return max(resume_at, now)


def parse_retry_after_ms(value: str | None, now: float) -> float | None:
    """``retry-after-ms: 1500`` -> now + 1.5."""
    if value is None:
        return None
    try:
        ms = float(value.strip())
    except ValueError:
        return None
    if ms < 0:
        return None
    return _sane(now + ms / 1000.0, now)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``retry-after: 120`` (seconds) or ``retry-after: Wed, 21 Oct 2026 07:28:00 GMT`` (HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return None if seconds < 0 else _sane(now + seconds, now)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _sane(when.timestamp(), now)


def parse_duration_s(value: str | None) -> float | None:
    """Go-style durations as OpenAI sends them: ``6m0s`` -> 360, ``1.5s``, ``20ms``, ``1h2m3s``, ``45``."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        bare = float(text)
    except ValueError:
        pass
    else:
        return bare if bare >= 0 else None
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        return None
    return total


def parse_reset_value(value: str | None, now: float) -> float | None:
    """An ``x-ratelimit-reset*`` value: a relative duration, or an epoch (seconds or milliseconds)."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d{12,}", text):  # OpenRouter: epoch milliseconds
        return _sane(int(text) / 1000.0, now)
    if re.fullmatch(r"\d{10,11}(?:\.\d+)?", text):  # epoch seconds (a 10-digit "duration" would be 300 years)
        return _sane(float(text), now)
    seconds = parse_duration_s(text)
    return None if seconds is None else _sane(now + seconds, now)


def parse_rfc3339(value: str | None, now: float) -> float | None:
    """``anthropic-ratelimit-requests-reset: 2026-01-01T00:05:00Z`` -> epoch seconds."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _sane(when.timestamp(), now)


def parse_resets_at(value: float | int | str | None, now: float) -> float | None:
    """The CLI's ``rate_limit_info.resetsAt``: epoch seconds (milliseconds tolerated)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number > 1e12:  # milliseconds
        number /= 1000.0
    if number <= 0:
        return None
    return _sane(number, now)


def parse_resets_text(text: str | None, now: float, default_tz: str = "UTC") -> float | None:
    """The CLI's human text: ``resets 5:45pm``, ``resets 5pm (Europe/Paris)``, ``resets Nov 26, 9am (UTC)``.

    The time is read in the named zone (else ``default_tz``, the zone the CLI was running in) and resolved to
    its next occurrence after ``now``: a reset is never in the past.
    """
    if not text:
        return None
    match = _RESETS_TEXT.search(text)
    if match is None:
        return None
    hour = int(match.group("hour"))
    minute = int(match.group("minute") or 0)
    ampm = (match.group("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif match.group("minute") is None:
        # A bare "resets 5" is too ambiguous to act on.
        return None
    if hour > 23 or minute > 59:
        return None
    try:
        zone = ZoneInfo(match.group("tz") or default_tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local_now = datetime.fromtimestamp(now, zone)
    month_name = (match.group("month") or "")[:3].lower()
    if month_name:
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        try:
            candidate = local_now.replace(month=month, day=int(match.group("day")), hour=hour, minute=minute,
                                          second=0, microsecond=0)
        except ValueError:
            return None
        if candidate.timestamp() <= now:
            try:
                candidate = candidate.replace(year=candidate.year + 1)
            except ValueError:
                return None
        return _sane(candidate.timestamp(), now)
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() <= now:
        # Wall-clock arithmetic in the zone, so a DST change in between is honoured.
        candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
    return _sane(candidate.timestamp(), now)


def latest(values: Iterable[float | None]) -> float | None:
    """The latest of the present values, or None."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def resume_at_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """The latest resume time any rate-limit header of a response asks for, or None.

    ``headers`` may be an ``httpx.Headers`` or a plain mapping; names are compared case-insensitively, and a
    proxy's prefix (``llm_provider-``, ``x-ms-``) is read through.
    """
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        name = str(key).lower()
        for prefix in _PROXY_PREFIXES:
            name = name.removeprefix(prefix)
        lowered.setdefault(name, str(value))
    candidates: list[float | None] = [
        parse_retry_after_ms(lowered.get("retry-after-ms"), now),
        parse_retry_after(lowered.get("retry-after"), now),
    ]
    for name, value in lowered.items():
        if name.startswith("x-ratelimit-reset") and _spent(
                lowered, name.replace("x-ratelimit-reset", "x-ratelimit-remaining", 1)):
            candidates.append(parse_reset_value(value, now))
        elif (name.startswith("anthropic-ratelimit-") and name.endswith("-reset")
              and _spent(lowered, name.removesuffix("-reset") + "-remaining")):
            # The documented form is RFC 3339; the subscription ("unified") headers carry epoch seconds.
            parsed = parse_rfc3339(value, now)
            candidates.append(parsed if parsed is not None else parse_resets_at(value, now))
    return latest(candidates)


# Prefixes under which proxies pass a provider's headers on: LiteLLM ("llm_provider-retry-after"), Azure OpenAI
# ("x-ms-retry-after-ms").
_PROXY_PREFIXES = ("llm_provider-", "x-ms-")


def _spent(headers: Mapping[str, str], remaining_name: str) -> bool:
    """Whether the bucket a reset header belongs to is spent: its ``remaining`` header is 0 or absent."""
    value = headers.get(remaining_name)
    if value is None:
        return True
    try:
        return float(value.strip()) <= 0
    except ValueError:
        return True


_TRY_AGAIN_IN = re.compile(r"try again in\s+([0-9][0-9.a-zµ]*)\b", re.IGNORECASE)
_TRY_AGAIN_IN_WORDS = re.compile(
    r"try again in\s+((?:\d+\s*(?:days?|hours?|minutes?|mins?|seconds?|secs?)[\s,and]*)+)", re.IGNORECASE)
_TRY_AGAIN_AT = re.compile(r"try again at\s+([0-9]{1,2}(?::[0-9]{2})?\s*[ap]\.?m\.?)", re.IGNORECASE)
_WORD_UNITS_S = {"day": 86400, "hour": 3600, "minute": 60, "min": 60, "second": 1, "sec": 1}


def parse_retry_text(text: str | None, now: float, default_tz: str = "UTC") -> float | None:
    """A hint in an error's words: ``Please try again in 7.66s`` (OpenAI, Groq), ``try again in 20ms``,
    ``try again in 5 minutes``, ``try again at 8:06 PM`` (the Codex CLI, in its local zone)."""
    if not text:
        return None
    words = _TRY_AGAIN_IN_WORDS.search(text)
    if words:
        seconds = sum(int(n) * _WORD_UNITS_S[u.lower()]
                      for n, u in re.findall(r"(\d+)\s*(day|hour|minute|min|second|sec)", words.group(1), re.I))
        if seconds:
            return _sane(now + seconds, now)
    compact = _TRY_AGAIN_IN.search(text)
    if compact:
        delay = parse_duration_s(compact.group(1).rstrip("."))
        if delay is not None:
            return _sane(now + delay, now)
    at = _TRY_AGAIN_AT.search(text)
    if at:
        return parse_resets_text("resets " + at.group(1).replace(".", "").replace(" ", ""), now, default_tz)
    return None


# Body fields that carry a hint, and how to read each: seconds, milliseconds, a duration string, an epoch.
_BODY_SECONDS = ("retry_after", "retryafter", "retry_after_seconds", "resets_in_seconds")
_BODY_MS = ("retry_after_ms", "retryafterms")
_BODY_DURATION = ("retrydelay",)  # Google's google.rpc.RetryInfo: "37s", "0.5s"
_BODY_EPOCH = ("resets_at", "reset_at")
_MAX_BODY_DEPTH = 6


def resume_at_from_body(body_text: str | None, now: float) -> float | None:
    """The latest resume time an error body asks for: its fields at any depth, headers a gateway copied into
    it (OpenRouter's ``metadata.headers``), and the hints in its messages. None for no hint or no JSON."""
    if not body_text:
        return None
    try:
        body = json.loads(body_text)
    except ValueError:
        return parse_retry_text(body_text, now)
    found: list[float | None] = []
    _walk(body, now, found, 0)
    return latest(found)


def _walk(node: Any, now: float, found: list[float | None], depth: int) -> None:
    if depth > _MAX_BODY_DEPTH:
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, now, found, depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        name = str(key).lower()
        if isinstance(value, dict | list):
            if name == "headers" and isinstance(value, dict):
                found.append(resume_at_from_headers({str(k): str(v) for k, v in value.items()}, now))
            else:
                _walk(value, now, found, depth + 1)
        elif name in _BODY_SECONDS:
            found.append(parse_retry_after(str(value), now))
        elif name in _BODY_MS:
            found.append(parse_retry_after_ms(str(value), now))
        elif name in _BODY_DURATION:
            seconds = parse_duration_s(str(value))
            found.append(None if seconds is None else _sane(now + seconds, now))
        elif name in _BODY_EPOCH:
            found.append(parse_resets_at(value, now))
        elif name == "message" and isinstance(value, str):
            found.append(parse_retry_text(value, now))


def retry_hint(headers: Mapping[str, str], body_text: str | None, now: float) -> float | None:
    """Every hint a rate-limited answer gives (headers, body fields, message text): the latest, or None."""
    return latest([resume_at_from_headers(headers, now), resume_at_from_body(body_text, now)])
