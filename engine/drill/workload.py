"""The drill's arrivals: background jobs and operator messages at seeded random moments of the simulated day.

Pure: the same scenario, job types and seed give the same list. Jobs arrive as a Poisson process over the
scenario's hours, conditioned on its count (``jobs_per_day`` scaled to the hours, rounded): the moments are
uniform and independent, so a test can count what arrives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.drill.scenario import Scenario
from engine.errors import ConfigError
from engine.models import Priority

# The operator's messages: some ask for work in words the simulated persona understands, the rest are chat.
_ASKS = (
    "research {topic}",
    "write a short note on {topic}",
    "fix the failing check in {topic}",
    "analyse the numbers of {topic}",
    "triage the inbox about {topic}",
)
_CHATTER = ("how is it going?", "what is on today?", "thanks, that helps", "anything I should know?")
_TOPICS = ("the billing service", "the Q3 report", "the onboarding flow", "the search index", "the weekly plan",
           "the deploy pipeline", "the customer survey", "the cache layer")


@dataclass(frozen=True)
class Arrival:
    at_s: float  # seconds after the start of the simulated day
    number: int  # 1, 2, ... in arrival order, per kind
    kind: str  # "job" or "message"
    job_type: str = ""
    priority: Priority = Priority.NORMAL
    text: str = ""


def plan_arrivals(scenario: Scenario, job_types: list[str], seed: int) -> list[Arrival]:
    workload = scenario.workload
    for name in workload.mix:
        if name not in job_types:
            raise ConfigError(f"scenario {scenario.name}: invalid key workload.mix.{name}: unknown job type "
                              f"(the configuration knows: {', '.join(job_types)})")
    rng = random.Random(f"drill:{seed}")  # not the name: every scenario with this workload gets the same arrivals
    span = scenario.span_s
    count = round(workload.jobs_per_day * scenario.hours / 24)
    types = sorted(workload.mix)
    lanes = sorted(workload.priority)
    job_moments = sorted(rng.uniform(0, span) for _ in range(count))
    jobs = [
        Arrival(at, n, "job", rng.choices(types, [workload.mix[t] for t in types])[0],
                Priority[rng.choices(lanes, [workload.priority[lane] for lane in lanes])[0].upper()],
                f"Drill workload item {n}")
        for n, at in enumerate(job_moments, start=1)
    ]
    start, end = workload.operator_window_s(span)
    message_moments = sorted(rng.uniform(start, end) for _ in range(workload.operator_messages)) if end > start else []
    messages = [
        Arrival(at, n, "message", text=_message(rng, workload.work_share))
        for n, at in enumerate(message_moments, start=1)
    ]
    return sorted(jobs + messages, key=lambda a: (a.at_s, a.kind, a.number))


def _message(rng: random.Random, work_share: float) -> str:
    if rng.random() < work_share:
        return rng.choice(_ASKS).format(topic=rng.choice(_TOPICS))
    return rng.choice(_CHATTER)
