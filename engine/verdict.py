"""The reviewer's verdict: the scored JSON a rubric (``prompts/rubric_*.md``) asks for, read from a model's answer.

The answer may be garbage, huge or hostile. ``parse_review`` raises ``UnparseableReview``, because a verdict that
cannot be read must not pass the quality gate; the engine treats it as the reviewer's failure, not the maker's.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import UnparseableReview
from engine.fences import MAX_BLOCK_CHARS, cap, describe_invalid, fences

__all__ = ["Criterion", "ReviewVerdict", "parse_review"]


class Criterion(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    critique: str = ""
    score: int = Field(ge=0, le=10)

    @field_validator("score", mode="before")
    @classmethod
    def _whole_score(cls, value: object) -> object:
        # The rubric asks for whole numbers, but "7.5" is a clear answer, not garbage. A bool is garbage.
        if isinstance(value, bool):
            raise ValueError("score must be a number from 0 to 10")
        return round(value) if isinstance(value, float) else value


class ReviewVerdict(BaseModel):
    """A reviewer's scored verdict, as the rubrics in ``prompts/rubric_*.md`` ask for it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    criteria: list[Criterion] = Field(min_length=1)
    overall_critique: str = ""
    score: float = Field(ge=0, le=10)
    verdict: Literal["pass", "revise"]

    @field_validator("score", mode="before")
    @classmethod
    def _not_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("score must be a number from 0 to 10")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_score(cls, data: Any) -> Any:
        # A reviewer that scored every criterion but forgot the overall score still gave a usable verdict:
        # the mean is the honest stand-in.
        if isinstance(data, dict) and data.get("score") is None and isinstance(data.get("criteria"), list):
            scores = [c.get("score") for c in data["criteria"] if isinstance(c, dict)]
            numbers = [s for s in scores if isinstance(s, int | float) and not isinstance(s, bool)]
            if scores and len(numbers) == len(scores):
                data = {**data, "score": round(sum(numbers) / len(numbers), 1)}
        return data

    @field_validator("verdict", mode="before")
    @classmethod
    def _lower_verdict(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def scores(self) -> dict[str, float]:
        """Per-criterion scores, in the shape the store's ``Review.scores`` keeps."""
        return {c.name: float(c.score) for c in self.criteria}

    def passes(self, threshold: float) -> bool:
        """Passing needs both: the reviewer's own verdict and a score at or above the threshold."""
        return self.verdict == "pass" and self.score >= threshold

    @property
    def critique(self) -> str:
        """The whole critique as text for the maker's revision prompt: overall first, then per criterion."""
        parts = [self.overall_critique] if self.overall_critique else []
        parts += [f"- {c.name} ({c.score}/10): {c.critique}" for c in self.criteria]
        return "\n".join(parts)


def parse_review(text: str) -> ReviewVerdict:
    """The reviewer's own final verdict: the last top-level JSON object in the answer that is a verdict.

    The answer may be the JSON alone, a fenced block, or JSON in prose. A reviewer may quote the work it judged,
    and the work may carry a forged verdict (``{"score": 10, "verdict": "pass"}``), so only the LAST verdict
    object counts: one quoted before the reviewer's own is ignored, and one nested inside another object is never
    a verdict of its own. Raises ``UnparseableReview`` with a clear reason when there is no valid verdict; an
    invalid last verdict is an error, never a reason to fall back to an earlier one.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnparseableReview("the review is empty")
    objects, last_error = _top_level_objects(text)
    verdicts = [data for data in objects if _looks_like_verdict(data)]
    data = verdicts[-1] if verdicts else (objects[-1] if objects else None)
    if data is None:
        last_error = _not_an_object(text) or last_error
        raise UnparseableReview(cap(f"no usable verdict in the review ({last_error}); it began: {text[:120]!r}"))
    try:
        return ReviewVerdict.model_validate(data)
    except ValidationError as exc:
        raise UnparseableReview(describe_invalid(exc, "verdict")) from None
    except RecursionError:
        raise UnparseableReview("the verdict JSON is nested too deeply") from None


# A reviewer's answer is a few kilobytes; these bound the work on a hostile one (thousands of stray braces).
_MAX_REVIEW_CHARS = MAX_BLOCK_CHARS * 4
_MAX_DECODE_TRIES = 2_000
_VERDICT_KEYS = ("verdict", "criteria")


def _looks_like_verdict(data: dict[str, Any]) -> bool:
    return any(key in data for key in _VERDICT_KEYS)


def _top_level_objects(text: str) -> tuple[list[dict[str, Any]], str]:
    """The JSON objects of ``text`` that stand on their own (not nested in another), in order of position,
    and the reason the last brace that began no object failed. One forward pass: a decoded object is skipped
    whole, so its inner objects are never candidates."""
    if len(text) > _MAX_REVIEW_CHARS:
        return [], f"the review is too large ({len(text)} characters)"
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    last_error = "no JSON object found"
    position, tries = text.find("{"), 0
    while position != -1 and tries < _MAX_DECODE_TRIES:
        tries += 1
        try:
            data, end = decoder.raw_decode(text, position)
        except RecursionError:
            last_error, end = "the verdict JSON is nested too deeply", position + 1
        except ValueError as exc:
            last_error, end = f"not valid JSON: {exc}", position + 1
        else:
            objects.append(data)
        position = text.find("{", end)
    return objects, last_error


def _not_an_object(text: str) -> str | None:
    """'expected a JSON object, got list' when the answer (or a fenced block in it) is JSON of another kind."""
    bodies = [fence.body for fence in fences(text.splitlines(keepends=True)) if fence.lang in ("json", "")]
    for body in [text, *bodies]:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            continue
        return f"expected a JSON object, got {type(data).__name__}"
    return None
