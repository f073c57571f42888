"""Routing: chain order by tier, and every reason a backend is skipped (paused, disabled, same family,
context window, concurrency, daily budget)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.models import BackendState
from engine.routing import CHARS_PER_TOKEN, Router, Skip, SkipReason
from engine.settings import BackendConfig, Settings, default_sim_backends


@dataclass
class _Configured:
    """Routing only reads a backend's config; the calls themselves are the runner's business."""

    config: BackendConfig


def router(settings: Settings, clock: FakeClock) -> Router:
    return Router(settings, {c.name: _Configured(c) for c in settings.backends}, clock)  # type: ignore[misc]


@pytest.fixture
def sims(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def names(plan: object) -> list[str]:
    return [c.name for c in plan.candidates]  # type: ignore[attr-defined]


def test_default_chain_own_tier_then_stronger_then_weaker(sims: Settings) -> None:
    # analysis is tier 2: the tier-2 sims, then tier 3, then tier 1 as a last resort
    assert sims.chain_for("analysis") == [
        "sim-sonnet", "sim-kimi", "sim-opus", "sim-gpt", "sim-deepseek", "sim-haiku", "sim-gemini-flash",
    ]
    assert sims.chain_for("triage")[:2] == ["sim-haiku", "sim-gemini-flash"]
    assert sims.chain_for("coding")[:3] == ["sim-opus", "sim-gpt", "sim-deepseek"]


def test_configured_chain_wins(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, routing={"analysis": ["sim-gpt", "sim-haiku"]})
    plan = router(settings, FakeClock()).plan("analysis", {}, prompt_chars=10)
    assert names(plan) == ["sim-gpt", "sim-haiku"]


def test_unknown_backend_in_routing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        Settings(home=tmp_path, routing={"analysis": ["nope"]})


def test_paused_backend_skipped_until_resume_and_earliest_resume_reported(sims: Settings) -> None:
    clock = FakeClock()
    now = clock.now()
    states = {
        "sim-sonnet": BackendState(name="sim-sonnet", paused_until=now + 600, pause_reason="rate_limited"),
        "sim-kimi": BackendState(name="sim-kimi", paused_until=now + 120, pause_reason="quota"),
    }
    r = router(sims, clock)
    plan = r.plan("analysis", states, prompt_chars=10)
    assert names(plan)[0] == "sim-opus"
    assert plan.skipped["sim-sonnet"].text.startswith("paused (rate_limited)")
    assert min(s.until for s in plan.skipped.values() if s.until is not None) == now + 120
    assert plan.skipped["sim-kimi"] == Skip(SkipReason.PAUSED, "quota", now + 120)

    clock.advance(121)
    assert names(r.plan("analysis", states, prompt_chars=10))[:2] == ["sim-kimi", "sim-opus"]
    clock.advance(480)
    assert names(r.plan("analysis", states, prompt_chars=10))[:2] == ["sim-sonnet", "sim-kimi"]


def test_disabled_backend_skipped_whatever_its_pause(sims: Settings) -> None:
    states = {"sim-sonnet": BackendState(name="sim-sonnet", disabled=True, pause_reason="auth")}
    plan = router(sims, FakeClock()).plan("analysis", states, prompt_chars=10)
    assert "sim-sonnet" not in names(plan)
    assert plan.skipped["sim-sonnet"].text == "disabled: auth"


def test_review_never_routed_to_the_makers_family(sims: Settings) -> None:
    plan = router(sims, FakeClock()).plan("review", {}, prompt_chars=10, exclude_family="anthropic")
    families = {c.family for c in plan.candidates}
    assert "anthropic" not in families
    assert families == {"openai", "deepseek", "moonshot", "google"}
    assert plan.blocked_by(SkipReason.SAME_FAMILY)


def test_only_same_family_leaves_no_candidate(tmp_path: Path) -> None:
    anthropic_only = [c for c in default_sim_backends() if c.family == "anthropic"]
    settings = Settings(home=tmp_path, backends=anthropic_only)
    plan = router(settings, FakeClock()).plan("review", {}, prompt_chars=10, exclude_family="anthropic")
    assert plan.candidates == []
    assert plan.blocked_by(SkipReason.SAME_FAMILY)


def test_context_window_too_small(tmp_path: Path) -> None:
    small = BackendConfig(name="small", kind="sim", family="a", tier=2, context_window=1_000)
    large = BackendConfig(name="large", kind="sim", family="b", tier=2, context_window=100_000)
    settings = Settings(home=tmp_path, backends=[small, large])
    plan = router(settings, FakeClock()).plan("analysis", {}, prompt_chars=2_000 * CHARS_PER_TOKEN)
    assert names(plan) == ["large"]
    assert plan.skipped["small"].text == "context window too small"


def test_concurrency_limit(tmp_path: Path) -> None:
    one = BackendConfig(name="one", kind="sim", family="a", tier=2, max_concurrency=1)
    other = BackendConfig(name="other", kind="sim", family="b", tier=2)
    settings = Settings(home=tmp_path, backends=[one, other])
    r = router(settings, FakeClock())
    r.running["one"] = 1
    plan = r.plan("analysis", {}, prompt_chars=10)
    assert names(plan) == ["other"]
    assert plan.blocked_by(SkipReason.AT_CONCURRENCY_LIMIT)


def test_daily_budget_skips_only_pay_per_token_backends(tmp_path: Path) -> None:
    paid = BackendConfig(name="paid", kind="openai", family="a", tier=2, price_in_per_mtok=1.0)
    sub = BackendConfig(name="sub", kind="claude_cli", family="b", tier=2, price_in_per_mtok=1.0, subscription=True)
    sim = BackendConfig(name="sim", kind="sim", family="c", tier=2, price_in_per_mtok=1.0)
    settings = Settings(home=tmp_path, backends=[paid, sub, sim], engine={"daily_budget_usd": 5.0})
    r = router(settings, FakeClock())
    assert names(r.plan("analysis", {}, prompt_chars=10, spent_today_usd=4.99)) == ["paid", "sub", "sim"]
    plan = r.plan("analysis", {}, prompt_chars=10, spent_today_usd=5.0)
    assert names(plan) == ["sub", "sim"]
    assert plan.blocked_by(SkipReason.DAILY_BUDGET)


def test_disabled_in_config(tmp_path: Path) -> None:
    off = BackendConfig(name="off", kind="sim", family="a", tier=2, enabled=False)
    on = BackendConfig(name="on", kind="sim", family="b", tier=2)
    settings = Settings(home=tmp_path, backends=[off, on], routing={"analysis": ["off", "on"]})
    plan = router(settings, FakeClock()).plan("analysis", {}, prompt_chars=10)
    assert names(plan) == ["on"]
    assert plan.skipped["off"].text == "disabled in config"


def test_plan_keeps_the_chain_and_states_it_was_made_from(sims: Settings) -> None:
    states = {"sim-sonnet": BackendState(name="sim-sonnet", disabled=True, pause_reason="auth")}
    plan = router(sims, FakeClock()).plan("analysis", states, prompt_chars=10)
    assert plan.chain == sims.chain_for("analysis")
    assert plan.states is states


def test_only_skips_for_a_backends_state_are_noteworthy(tmp_path: Path) -> None:
    """The job's routing event names paused, disabled and budget skips; routine ones cost no write."""
    clock = FakeClock()
    paused = BackendConfig(name="paused", kind="sim", family="a", tier=2)
    dead = BackendConfig(name="dead", kind="sim", family="b", tier=2)
    off = BackendConfig(name="off", kind="sim", family="c", tier=2, enabled=False)
    busy = BackendConfig(name="busy", kind="sim", family="d", tier=2, max_concurrency=1)
    chain = ["paused", "dead", "off", "busy"]
    settings = Settings(home=tmp_path, backends=[paused, dead, off, busy], routing={"analysis": chain})
    r = router(settings, clock)
    r.running["busy"] = 1
    states = {
        "paused": BackendState(name="paused", paused_until=clock.now() + 60, pause_reason="rate_limited"),
        "dead": BackendState(name="dead", disabled=True, pause_reason=None),
    }
    plan = r.plan("analysis", states, prompt_chars=10)
    assert plan.noteworthy_skips() == {
        "paused": f"paused (rate_limited) until {clock.now() + 60:.0f}",
        "dead": "disabled: credentials",
    }
    assert set(plan.skipped) == {"paused", "dead", "off", "busy"}


def test_a_claude_cli_on_an_api_key_is_inside_the_cap_without_prices(tmp_path: Path) -> None:
    """Issue 14: the CLI prices its own runs (total_cost_usd); only a subscription is outside the daily cap."""
    key = BackendConfig(name="cli-key", kind="claude_cli", family="a", tier=2, api_key_env="ANTHROPIC_API_KEY")
    sub = BackendConfig(name="cli-sub", kind="claude_cli", family="b", tier=2, subscription=True)
    assert key.pay_per_token and not sub.pay_per_token
    settings = Settings(home=tmp_path, backends=[key, sub], engine={"daily_budget_usd": 5.0})
    plan = router(settings, FakeClock()).plan("analysis", {}, prompt_chars=10, spent_today_usd=5.0)
    assert names(plan) == ["cli-sub"] and plan.blocked_by(SkipReason.DAILY_BUDGET)


@pytest.mark.parametrize(("kinds", "candidates", "none_can_act"), [
    ({"cli": "claude_cli", "codex": "codex_cli", "api": "openai"}, ["cli", "codex"], False),
    ({"api": "openai", "msgs": "anthropic", "codex": "codex_cli"}, ["codex"], False),
    ({"api": "openai", "msgs": "anthropic"}, [], True),
    ({"sim": "sim", "api": "openai"}, ["sim"], False),
])
def test_a_job_that_needs_a_workspace_goes_only_to_backends_that_act_on_files(
        tmp_path: Path, kinds: dict[str, str], candidates: list[str], none_can_act: bool) -> None:
    configs = [BackendConfig(name=n, kind=k, family=n, tier=3) for n, k in kinds.items()]  # type: ignore[arg-type]
    settings = Settings(home=tmp_path, backends=configs, routing={"coding": list(kinds)})
    plan = router(settings, FakeClock()).plan("coding", {}, prompt_chars=10, needs_files=True)
    assert names(plan) == candidates and plan.none_can_act_on_files() is none_can_act
    skipped = {n for n, k in kinds.items() if k in ("openai", "anthropic")}
    assert plan.skipped == {n: Skip(SkipReason.NEEDS_WORKSPACE) for n in skipped}
    assert set(plan.noteworthy_skips()) == skipped  # written to the job's events
    unrestricted = router(settings, FakeClock()).plan("coding", {}, prompt_chars=10)
    assert names(unrestricted) == list(kinds)
