"""Telegram's limits, applied before anything is sent: 4096 characters per message counted after entity
parsing (so plain text is split first and escaped afterwards), 64 bytes of callback data, HTML escaped."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

log = logging.getLogger(__name__)

MAX_TEXT_UTF16 = 4096
MAX_CAPTION_UTF16 = 1024
MAX_CALLBACK_BYTES = 64
MAX_BUTTON_LABEL = 40
# Kinds whose first line is a headline worth bolding.
_HEADLINED = frozenset({"job_done", "job_failed", "needs_human", "alert"})


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT_UTF16) -> list[str]:
    """Split plain text into chunks of at most ``limit`` UTF-16 code units (Telegram's stricter count),
    preferring paragraph, then line, then word boundaries. Never splits a character."""
    text = text.strip() or "(empty)"
    chunks: list[str] = []
    while utf16_len(text) > limit:
        cut = _fit(text, limit)
        window = text[:cut]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at > cut // 2:
                cut = at
                break
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        chunks.append(text)
    return chunks


def _fit(text: str, limit: int) -> int:
    """The largest prefix length (in characters) within ``limit`` UTF-16 units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def to_html(chunk: str, *, headline: bool = False) -> str:
    """Escape a plain-text chunk for parse_mode HTML; optionally bold its first line (markup is not counted)."""
    if not headline:
        return html.escape(chunk, quote=False)
    first, sep, rest = chunk.partition("\n")
    return f"<b>{html.escape(first, quote=False)}</b>{sep}{html.escape(rest, quote=False)}"


def wants_headline(kind: str) -> bool:
    return kind in _HEADLINED


def callback_data_ok(data: str) -> bool:
    return 0 < len(data.encode("utf-8")) <= MAX_CALLBACK_BYTES


def keyboard(buttons: Sequence[Sequence[str]] | None, per_row: int = 2) -> InlineKeyboardMarkup | None:
    """``[[label, data], ...]`` -> an inline keyboard. Buttons whose data exceeds 64 bytes are dropped (and
    logged): Telegram would refuse the whole message."""
    valid: list[InlineKeyboardButton] = []
    for item in buttons or []:
        if len(item) != 2:
            continue
        label, data = str(item[0]), str(item[1])
        if not callback_data_ok(data):
            log.warning("dropping a button whose callback data is %d bytes", len(data.encode("utf-8")))
            continue
        valid.append(InlineKeyboardButton(label[:MAX_BUTTON_LABEL] or "?", callback_data=data))
    if not valid:
        return None
    return InlineKeyboardMarkup([valid[i : i + per_row] for i in range(0, len(valid), per_row)])
