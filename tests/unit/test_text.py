"""Operator text normalised at the edge: invisible and bidi-control characters removed, names on one line, cuts
and limits stated."""

from __future__ import annotations

import pytest

from engine.text import MAX_MEMORY_CHARS, clean_name, clean_text, clip, memory_text

INVISIBLE = "\x00\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"


def test_nul_zero_width_and_bidi_controls_are_removed_and_the_rest_kept() -> None:
    assert clean_text(f"a{INVISIBLE}b") == "ab"
    assert clean_text("\u202egnp.exe") == "gnp.exe"  # would display as "exe.png"
    kept = "Grüße, 你好, مرحبا, emoji 🙂, tab\tand\nnewline"
    assert clean_text(kept) == kept


def test_a_name_is_one_clean_line() -> None:
    assert clean_name("  thesis\nnotes\u200b \t draft\u202e ") == "thesis notes draft"
    assert clean_name(INVISIBLE) == ""


def test_a_cut_message_says_so() -> None:
    assert clip("short\x00") == ("short", None)
    text, note = clip("x" * 25_000, 20_000)
    assert len(text) == 20_000
    assert note == "Your message was 25,000 characters; I read only the first 20,000."


def test_memory_text_has_one_limit_stated_in_the_error() -> None:
    assert memory_text(" tea\u200b ") == "tea"
    assert len(memory_text("x" * MAX_MEMORY_CHARS)) == MAX_MEMORY_CHARS
    with pytest.raises(ValueError, match="20,000 characters; a memory holds at most 2,000"):
        memory_text("x" * 20_000)
    with pytest.raises(ValueError, match="empty"):
        memory_text("\u200b\x00 ")
