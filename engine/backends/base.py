"""The one interface every model backend implements.

A backend turns a ``BackendRequest`` into a ``BackendResult``. It never raises for a model or transport
failure: it returns a result whose ``failure`` is classified (see ``engine.failures``). Only programming
errors escape as exceptions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from engine.failures import Failure
from engine.quota import WindowReport
from engine.settings import BackendConfig

# Called with a short human-readable line whenever the backend shows signs of life (a stream event,
# a tool call). The engine uses it to renew the lease and to update the job's progress card.
ProgressCallback = Callable[[str], Awaitable[None]]


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class BackendRequest(BaseModel):
    job_id: int
    job_type: str
    # The stable, cache-friendly prefix: persona / core memory / job-type instructions. Byte-identical
    # between calls of the same job type so provider prompt caches stay warm.
    system: str = ""
    # The variable part: relevant memories, then the task itself.
    prompt: str
    workspace: Path | None = None
    # For CLI workers, besides their job folder (``workspace``): the folder where the work itself happens
    # (a project folder, a worktree; read-write) and folders they may only read. Nothing else is visible.
    work_dir: Path | None = None
    read_dirs: list[Path] = Field(default_factory=list)
    # True: the worker runs in ``work_dir`` (a job's git worktree) and writes its job folder as an added folder;
    # else it runs in its job folder and ``work_dir`` is the added one.
    cwd_in_work_dir: bool = False
    # Resume a previous session (claude_cli / codex_cli) where the backend supports it.
    session_id: str | None = None
    # That session's running token total as its previous run reported it (a CLI that reports running totals,
    # codex, subtracts it to get this run's own usage).
    session_usage: Usage | None = None
    max_turns: int | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    timeout_s: float = 1800.0
    max_budget_usd: float | None = None
    max_output_tokens: int = 4096


class BackendResult(BaseModel):
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    session_id: str | None = None
    model: str = ""
    failure: Failure | None = None
    latency_ms: float = 0.0
    # Subscription usage windows the backend reported during the run (the Claude CLI's rate_limit_event).
    windows: list[WindowReport] = Field(default_factory=list)
    # The session's running token total after this run, when the backend reports one (codex): the engine keeps
    # it and passes it back as ``BackendRequest.session_usage`` on the next resume.
    session_total: Usage | None = None
    # A subscription run's price at list prices, as the CLI reports it (``total_cost_usd``): not spent, saved.
    list_price_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class CredentialStatus(BaseModel):
    ok: bool
    message: str = ""
    # False when nothing could be asked without running a job (a CLI's login): ``ok`` then only means the
    # binary and the login file are there, and never re-enables a backend disabled for its credentials.
    checked: bool = True
    # Epoch seconds when the credential stops working, when the backend can tell (OAuth tokens).
    expires_at: float | None = None


class Backend(Protocol):
    @property
    def config(self) -> BackendConfig: ...  # read-only: a wrapper (engine/redaction.py) passes its inner's through

    async def run(self, request: BackendRequest, progress: ProgressCallback | None = None) -> BackendResult:
        ...

    async def check_credentials(self) -> CredentialStatus:
        ...

    async def aclose(self) -> None:
        ...


def price_usage(config: BackendConfig, usage: Usage) -> float:
    """USD for one call at the backend's configured prices (per million tokens); 0 for subscriptions.

    An unset (zero) cache price falls back to the input price: charging a cached token like a fresh one
    overestimates a little, where pricing it at zero would hide real spend from the daily cap.
    """
    if config.subscription:
        return 0.0
    price_in = config.price_in_per_mtok
    cache_read = config.price_cache_read_per_mtok or price_in
    cache_write = config.price_cache_write_per_mtok or price_in
    total = (usage.input_tokens * price_in + usage.output_tokens * config.price_out_per_mtok
             + usage.cache_read_tokens * cache_read + usage.cache_write_tokens * cache_write)
    return total / 1_000_000
