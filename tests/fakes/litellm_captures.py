"""The LiteLLM proxy's real answers, recorded by ``tests/fixtures/litellm/capture.py`` (see tests/fixtures/README.md).

``load(name)`` gives a capture as stored (status, headers, body, captured_with); ``as_openai_error(name)`` the same
answer for ``FakeOpenAI`` to replay: the fake writes the same ``{"error": {message, type, param, code}}`` body and
sends the captured headers, less the ones it sets itself (length, type, date, connection).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes.fake_openai import OpenAIError

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "litellm"
_OWN_HEADERS = {"content-length", "content-type", "date", "connection"}


def load(name: str) -> dict[str, Any]:
    capture: dict[str, Any] = json.loads((CAPTURES / f"{name}.json").read_text())
    return capture


def as_openai_error(name: str) -> OpenAIError:
    capture = load(name)
    error = capture["body"]["error"]
    headers = {k: v for k, v in capture["headers"].items() if k not in _OWN_HEADERS}
    return OpenAIError(capture["status"], error["message"], error["type"], error["code"], headers)
