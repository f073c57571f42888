"""The engine's vocabulary: the job states, priorities and sources, and the few keys and markers that the engine,
the store and the command line share.

Plain Python, no pydantic: the command line's parser offers these values as choices, and ``Control`` reads the
liveness mark, without loading the models or the engine's loop.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

# The engine's liveness mark in the kv table: "<epoch seconds> <owner>", renewed every sweep interval.
ALIVE_KEY = "engine:alive"  # "<epoch seconds> <owner>", renewed every sweep; "<...> stopped" after a clean stop
STOPPED_MARK = "stopped"
# A job waiting in needs_input keeps its worker's question in ``progress`` behind this prefix.
QUESTION_PREFIX = "Question for the operator: "


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    REVIEWING = "reviewing"
    REVISING = "revising"
    SNOOZED = "snoozed"
    RETRY_WAIT = "retry_wait"
    NEEDS_INPUT = "needs_input"
    NEEDS_HUMAN = "needs_human"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Priority(IntEnum):
    """Lower runs first. Operator work always goes before everything else."""

    OPERATOR = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, text: str) -> Priority:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown priority {text!r} (operator, high, normal, low)") from None


class Source(StrEnum):
    OPERATOR = "operator"
    CHAT = "chat"
    SCHEDULE = "schedule"
    PULSE = "pulse"
    REVISION = "revision"
    SYSTEM = "system"
