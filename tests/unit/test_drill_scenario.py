"""Drill scenarios: the shipped ones load, a malformed one is one line naming the key, arrivals are seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.drill.scenario import load_scenario, parse_scenario, shipped
from engine.drill.workload import plan_arrivals
from engine.errors import ConfigError
from engine.settings import JOB_TYPES

MINIMAL = 'name = "t"\nhours = 1\n[workload]\njobs_per_day = 240\n'


def test_the_shipped_scenarios_load() -> None:
    assert {"seed-day", "oauth-expiry", "rate-limit-storm", "provider-gone", "quiet"} <= set(shipped())
    for name in shipped():
        scenario = load_scenario(name)
        assert scenario.name == name and scenario.workload.jobs_per_day > 0
    assert load_scenario("quiet").incidents == []
    oauth = load_scenario("oauth-expiry").incidents[0]
    assert (oauth.kind, oauth.start_s, oauth.end_s) == ("auth", 11 * 3600 + 2 * 60, 12 * 3600 + 35 * 60)


def test_a_scenario_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_scenario(str(path)).hours == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "colour = 1\n", "scenario: unknown key workload.colour"),
        (MINIMAL.replace("hours = 1", "hours = -1"), "scenario: invalid key hours: Input should be greater than 0"),
        ('name = "t"\nhours = 1\n', "scenario: missing key workload"),
        (MINIMAL + '[[incidents]]\nrole = "all"\nstart = "02:00"\nminutes = 5\nkind = "meltdown"\n',
         "scenario: invalid key incidents[0].kind: Input should be 'outage', 'rate_limit', 'auth', 'slow', "
         "'garbage' or 'quota'"),
        (MINIMAL + '[[incidents]]\nrole = "all"\nstart = "2 AM"\nminutes = 5\nkind = "auth"\n',
         "scenario: invalid key incidents[0].start: not a time of the simulated day: '2 AM' (HH:MM, e.g. 02:00)"),
        (MINIMAL + '[[incidents]]\nstart = "02:00"\nminutes = 5\nkind = "auth"\n',
         "scenario: invalid key incidents[0]: name exactly one of backend, family or role"),
        (MINIMAL + "[workload.priority]\nurgent = 1.0\n",
         "scenario: invalid key workload.priority: unknown lane 'urgent' (one of: high, normal, low)"),
        (MINIMAL + "[twins.tier2]\nlatency = 3\n", "scenario: unknown key twins.tier2.latency"),
        ("name = 't'\nhours = ", "scenario: not valid TOML"),
    ],
)
def test_a_malformed_scenario_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_scenario(text)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_an_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope' .shipped: .*seed-day"):
        load_scenario("nope")


def test_a_mix_type_the_configuration_does_not_know_is_named() -> None:
    scenario = parse_scenario(MINIMAL + "[workload.mix]\npoetry = 1.0\n")
    with pytest.raises(ConfigError, match=r"workload\.mix\.poetry: unknown job type"):
        plan_arrivals(scenario, list(JOB_TYPES), seed=1)


def test_twin_profiles_merge_default_tier_and_name() -> None:
    scenario = parse_scenario(MINIMAL + "[twins.default]\nlatency_s = 5\ntokens_in = 10\n[twins.tier3]\n"
                              "latency_s = 50\n[twins.opus]\ntokens_in = 99\n")
    opus, other3, tier1 = (scenario.twin_profile("opus", 3), scenario.twin_profile("gpt", 3),
                           scenario.twin_profile("haiku", 1))
    assert (opus["latency_s"], opus["tokens_in"]) == (50, 99)
    assert (other3["latency_s"], other3["tokens_in"]) == (50, 10)
    assert (tier1["latency_s"], tier1["tokens_out"]) == (5, 250)  # tokens_out: the built-in tier 1 default


def test_arrivals_are_counted_seeded_and_ordered() -> None:
    scenario = parse_scenario(MINIMAL + "[workload.mix]\nanalysis = 1\ntriage = 1\n")
    scenario = scenario.model_copy(update={"workload": scenario.workload.model_copy(
        update={"operator_messages": 6, "work_share": 1.0})})
    first, again, other = (plan_arrivals(scenario, list(JOB_TYPES), seed) for seed in (1, 1, 2))
    assert first == again and first != other
    jobs = [a for a in first if a.kind == "job"]
    messages = [a for a in first if a.kind == "message"]
    assert len(jobs) == 10 and len(messages) == 6  # 240 a day for one hour; every message asks for work
    assert {a.job_type for a in jobs} <= {"analysis", "triage"}
    assert all(0 <= a.at_s < 3600 for a in first) and first == sorted(first, key=lambda a: a.at_s)
