"""Provider payloads as tolerant pydantic models: the base every backend's wire models share, and the Anthropic
usage object, which both the Messages API (``anthropic``) and the claude CLI's result line (``claude_cli``) carry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from engine.backends.base import Usage


class Loose(BaseModel):
    """Ignores fields it does not know: providers add fields without notice."""

    model_config = ConfigDict(extra="ignore")


class AnthropicUsage(Loose):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_zero(cls, value: Any) -> Any:
        return 0 if value is None else value

    def to_usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                     cache_read_tokens=self.cache_read_input_tokens,
                     cache_write_tokens=self.cache_creation_input_tokens)
