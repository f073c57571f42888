"""``run_blocking``: the driver of the CLI's commands on the store, which run without an event loop."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from bot.cli_common import run_blocking


class _Suspends:
    """An awaitable that suspends once, as a loop's future or timer does."""

    def __await__(self) -> Generator[None, None, int]:
        yield
        return 1


async def _finishes_at_once(value: int) -> int:
    async def inner() -> int:
        return value * 2

    return await inner() + 1


async def _raises() -> int:
    raise ValueError("told as one line by the CLI")


async def _waits() -> int:
    return await _Suspends()


def test_a_coroutine_that_never_suspends_runs_to_its_value() -> None:
    assert run_blocking(_finishes_at_once(20)) == 41


def test_its_exception_is_raised_as_it_is() -> None:
    with pytest.raises(ValueError, match="told as one line"):
        run_blocking(_raises())


def test_a_coroutine_that_would_wait_fails_at_once_and_is_closed() -> None:
    coroutine = _waits()
    with pytest.raises(RuntimeError, match="waited for something"):
        run_blocking(coroutine)
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning, no half-run frame left
