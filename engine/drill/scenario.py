"""A drill's scenario: a day of workload and the incidents that hit it, read from TOML.

Shipped scenarios live in ``engine/drill/scenarios/NAME.toml`` (``switchboard drill seed-day``); any path to a
TOML file is accepted too. Every table forbids keys it does not know; a malformed scenario raises
``ConfigError`` with one line naming the key (``incidents[1].kind: ...``).

Shape (every key but ``name``, ``hours`` and ``[workload]`` has a default)::

    name = "seed-day"
    hours = 24                     # arrivals spread over this many hours from 00:00 of the simulated day
    drain_hours = 2                # then no new work: how long open jobs may still finish
    [workload]
    jobs_per_day = 209             # background jobs (Poisson arrivals, seeded)
    operator_messages = 40         # chat turns from the operator
    work_share = 0.5               # share of those turns that ask for work (the persona queues a job)
    operator_hours = "07:00-23:00" # when the operator writes (default: the whole span)
    [workload.mix]                 # share of jobs per type (job types as in the config)
    coding = 0.25
    [workload.priority]            # share of background jobs per lane (default: all normal)
    high = 0.1
    [twins.default]                # how the simulated twins behave: default < tierN < a backend's name
    latency_s = 30
    [twins.tier3]
    latency_s = 90
    [[incidents]]                  # one of backend / family / role ("primary", "primary-family", "all")
    role = "primary-family"
    start = "02:00"                # HH:MM after the start of the simulated day (may pass 24:00)
    minutes = 60
    kind = "outage"                # outage | rate_limit | auth | slow | garbage | quota
    window_tokens = 150000         # quota only: a subscription window of this many tokens, from start for minutes,
                                   # filled by the twin's own calls (warning past 75%, the wall when full, a call
                                   # running when it fills is cut off); without it, exhausted for the whole incident
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError

IncidentKind = Literal["outage", "rate_limit", "auth", "slow", "garbage", "quota"]
Role = Literal["primary", "primary-family", "all"]
LANES = ("high", "normal", "low")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_offset(text: str) -> float:
    """'02:00' -> 7200.0 seconds after the start of the simulated day. Hours may pass 23 ('25:30')."""
    hours, colon, minutes = text.strip().partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and int(minutes) < 60):
        raise ValueError(f"not a time of the simulated day: {text!r} (HH:MM, e.g. 02:00)")
    return int(hours) * 3600.0 + int(minutes) * 60.0


class TwinProfile(_Strict):
    """How a simulated twin answers when no incident touches it. Every field optional: tables merge."""

    latency_s: float | None = Field(None, ge=0)
    latency_jitter: float | None = Field(None, ge=0, le=1)  # latency varies by +- this fraction
    tokens_in: int | None = Field(None, ge=0)
    tokens_out: int | None = Field(None, ge=0)
    failure_rate: float | None = Field(None, ge=0, le=1)  # share of calls answered with a 500
    rate_limit_rate: float | None = Field(None, ge=0, le=1)  # share of calls answered with a 429
    retry_after_s: float | None = Field(None, gt=0)
    reject_rate: float | None = Field(None, ge=0, le=1)  # as a reviewer: share of verdicts below the threshold


# What a twin does when the scenario says nothing about it, by tier.
_BASE = {"latency_jitter": 0.5, "failure_rate": 0.0, "rate_limit_rate": 0.0, "retry_after_s": 60.0,
         "reject_rate": 0.1}
DEFAULT_TWINS: dict[str, dict[str, float]] = {
    "tier1": {**_BASE, "latency_s": 6.0, "tokens_in": 1500, "tokens_out": 250},
    "tier2": {**_BASE, "latency_s": 30.0, "tokens_in": 3000, "tokens_out": 700},
    "tier3": {**_BASE, "latency_s": 90.0, "tokens_in": 6000, "tokens_out": 1500},
}


class Workload(_Strict):
    jobs_per_day: float = Field(ge=0, le=100_000)
    operator_messages: int = Field(0, ge=0, le=10_000)
    work_share: float = Field(0.5, ge=0, le=1)
    operator_hours: str | None = None
    mix: dict[str, float] = Field(default_factory=lambda: {"analysis": 1.0})
    priority: dict[str, float] = Field(default_factory=lambda: {"normal": 1.0})

    @field_validator("mix", "priority")
    @classmethod
    def _shares(cls, shares: dict[str, float]) -> dict[str, float]:
        if not shares or any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError("shares must be zero or more, and not all zero")
        return shares

    @field_validator("priority")
    @classmethod
    def _lanes(cls, shares: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(shares) - set(LANES))
        if unknown:
            raise ValueError(f"unknown lane {unknown[0]!r} (one of: {', '.join(LANES)})")
        return shares

    @field_validator("operator_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            start, dash, end = value.partition("-")
            if not dash or parse_offset(start) >= parse_offset(end):
                raise ValueError(f"not a window of the day: {value!r} (HH:MM-HH:MM, e.g. 07:00-23:00)")
        return value

    def operator_window_s(self, span_s: float) -> tuple[float, float]:
        if self.operator_hours is None:
            return 0.0, span_s
        start, _, end = self.operator_hours.partition("-")
        return parse_offset(start), min(parse_offset(end), span_s)


class Incident(_Strict):
    backend: str | None = None
    family: str | None = None
    role: Role | None = None
    start: str
    minutes: float = Field(gt=0)
    kind: IncidentKind
    rate: float = Field(1.0, gt=0, le=1)  # share of calls in the window that it hits
    retry_after_s: float = Field(60.0, gt=0)  # rate_limit: what the 429 says
    factor: float = Field(5.0, ge=1)  # slow: latency times this
    forecast: bool = True  # auth: the credential check shows the expiry ahead (an OAuth token's expiresAt)
    window_tokens: int | None = Field(None, gt=0)  # quota: a window that fills with use (see the module's doc)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        parse_offset(value)
        return value

    @model_validator(mode="after")
    def _window_is_quota(self) -> Incident:
        if self.window_tokens is not None and self.kind != "quota":
            raise ValueError("window_tokens is for kind = \"quota\" only")
        return self

    @model_validator(mode="after")
    def _one_target(self) -> Incident:
        given = [k for k in ("backend", "family", "role") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("name exactly one of backend, family or role")
        return self

    @property
    def start_s(self) -> float:
        return parse_offset(self.start)

    @property
    def end_s(self) -> float:
        return self.start_s + self.minutes * 60.0

    def target(self) -> str:
        return f"backend {self.backend}" if self.backend else f"family {self.family}" if self.family else str(
            self.role)


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    hours: float = Field(gt=0, le=24 * 7)
    drain_hours: float = Field(2.0, ge=0, le=48)
    seed: int = 0
    workload: Workload
    twins: dict[str, TwinProfile] = Field(default_factory=dict)
    incidents: list[Incident] = Field(default_factory=list)

    @property
    def span_s(self) -> float:
        return self.hours * 3600.0

    def twin_profile(self, name: str, tier: int) -> dict[str, float]:
        """The merged profile of one twin: built-in tier defaults < [twins.default] < [twins.tierN] < its name."""
        merged: dict[str, float] = dict(DEFAULT_TWINS[f"tier{tier}"])
        for key in ("default", f"tier{tier}", name):
            table = self.twins.get(key)
            if table is not None:
                merged.update(table.model_dump(exclude_none=True))
        return merged


def shipped() -> list[str]:
    """The names of the scenarios shipped in the package."""
    folder = resources.files("engine.drill").joinpath("scenarios")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a TOML file by path. Raises ConfigError with one line naming the key."""
    path = Path(name_or_path)
    if name_or_path in shipped():
        text = resources.files("engine.drill").joinpath("scenarios", f"{name_or_path}.toml").read_text("utf-8")
        where = f"scenario {name_or_path}"
    elif path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"scenario file {path}: cannot read: {exc.strerror}") from None
        where = str(path)
    else:
        raise ConfigError(f"unknown scenario {name_or_path!r} (shipped: {', '.join(shipped())}; or a path to a "
                          ".toml file)")
    return parse_scenario(text, where)


def parse_scenario(text: str, where: str = "scenario") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc, data)}") from None


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {key}{more}"
    if first["type"] == "missing":
        return f"missing key {key}{more}"
    return f"invalid key {key}: {first['msg'].removeprefix('Value error, ')}{more}"
