"""The subscription-window drills (issue 17): a ``quota`` incident with ``window_tokens`` is a window that fills
with the calls of the twins it hits, and the report counts what it did to the work, with quota-aware routing on
and off (``[quota] enabled``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.drill import load_scenario, report_text, run_drill
from engine.drill.scenario import parse_scenario
from engine.errors import ConfigError
from engine.settings import BackendConfig, Settings

# Three hours of analysis (max, then paid) and triage (max only) at 20 jobs an hour, and a dozen chats; every
# call takes a minute and 1,500 tokens. max's plan has one five-hour window from 00:00 holding 29,000 tokens:
# the twentieth call overflows it.
WALL = """
name = "wall"
hours = 3
drain_hours = 4
seed = 3
[workload]
jobs_per_day = 480
operator_messages = 12
work_share = 0
[workload.mix]
analysis = 0.5
triage = 0.5
[workload.priority]
normal = 0.6
low = 0.4
[twins.default]
latency_s = 60
latency_jitter = 0
tokens_in = 1000
tokens_out = 500
reject_rate = 0
[[incidents]]
backend = "max"
start = "00:00"
minutes = 300
kind = "quota"
window_tokens = 29000
"""


def _settings(tmp_path: Path, *, quota: bool) -> Settings:
    backends = [BackendConfig(name=name, kind="sim", model=name, family=family, tier=2, price_in_per_mtok=1.0,
                              price_out_per_mtok=2.0, max_concurrency=50) for name, family in (("max", "a"),
                                                                                                  ("paid", "b"))]
    routing = {"analysis": ["max", "paid"], "triage": ["max"]}
    return Settings(home=tmp_path / "operator-home", backends=backends, routing=routing, quota={"enabled": quota})


async def _both(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    scenario = parse_scenario(WALL)
    return (await run_drill(_settings(tmp_path, quota=True), scenario),
            await run_drill(_settings(tmp_path, quota=False), scenario))


async def test_quota_aware_routing_keeps_the_operator_off_the_wall(tmp_path: Path) -> None:
    on, off = await _both(tmp_path)
    for report in (on, off):
        assert report["done"] == report["submitted"] and report["still_open"] == 0
        assert report["subscription_saved_usd"] > 0  # the window's twin is a subscription: no price per call
    # Off: the window fills, a call meets the wall, jobs running when it fills are cut off mid-run.
    assert off["jobs_hit_wall"] >= 1 and off["cut_off_by_window"] >= 1
    assert off["moved_off_window"] == off["deferred"] == 0
    # On: background analysis moves to paid, background triage (max only) waits for the reset and resumes.
    assert on["operator_jobs_hit_wall"] == 0 and on["cut_off_by_window"] == 0
    assert on["moved_off_window"] > 0 and on["deferred"] > 0 and on["resumed"] == on["deferred"]
    assert on["extra_paid_usd"] > 0
    assert "subscription windows: 0 operator jobs hit the wall" in report_text(on)


def test_the_shipped_subscription_wall_scenario() -> None:
    scenario = load_scenario("subscription-wall")
    (incident,) = scenario.incidents
    assert (incident.kind, incident.role, incident.window_tokens) == ("quota", "primary-family", 200_000)


def test_window_tokens_belong_to_quota_incidents() -> None:
    with pytest.raises(ConfigError, match=r"incidents\[0\]: window_tokens is for kind = \"quota\" only"):
        parse_scenario(WALL.replace('kind = "quota"', 'kind = "outage"'))
