"""The reviewer's verdict: the scored JSON a rubric (``prompts/rubric_*.md``) asks for, read from a model's answer.

The answer may be garbage, huge or hostile. ``parse_review`` raises ``UnparseableReview``, because a verdict that
cannot be read must not pass the quality gate; the engine treats it as the reviewer's failure, not the maker's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    """The verdict in a reviewer's answer: JSON in a fenced block, bare, or embedded in prose.

    Raises ``UnparseableReview`` with a clear reason when there is no valid verdict.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnparseableReview("the review is empty")
    last_error = "no JSON object found"
    for candidate in _review_candidates(text):
        if len(candidate) > MAX_BLOCK_CHARS * 4:
            last_error = f"the verdict JSON is too large ({len(candidate)} characters)"
            continue
        try:
            data = json.loads(candidate)
        except RecursionError:
            last_error = "the verdict JSON is nested too deeply"
            continue
        except ValueError as exc:
            last_error = f"not valid JSON: {exc}"
            continue
        if not isinstance(data, dict):
            last_error = f"expected a JSON object, got {type(data).__name__}"
            continue
        try:
            return ReviewVerdict.model_validate(data)
        except ValidationError as exc:
            raise UnparseableReview(describe_invalid(exc, "verdict")) from None
        except RecursionError:
            last_error = "the verdict JSON is nested too deeply"
    raise UnparseableReview(cap(f"no usable verdict in the review ({last_error}); it began: {text[:120]!r}"))


def _review_candidates(text: str) -> Iterator[str]:
    # Most specific first: fenced blocks, then the outermost braces (the whole text when the JSON is bare).
    lines = text.splitlines(keepends=True)
    for fence in fences(lines):
        if fence.lang in ("json", "") and fence.body.strip():
            yield fence.body.strip()
    first, last = text.find("{"), text.rfind("}")
    if -1 < first < last:
        yield text[first : last + 1]
