"""Drills on the real engine in virtual time: short scenarios (an hour, a few dozen jobs) against hand-counted
expectations, incidents of each kind, --without, determinism, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from telegram import Bot

from bot.app import open_services
from bot.charts import drill_chart_png
from bot.cli import main
from bot.telegram.sender import OutboxSender
from engine.clock import FakeClock
from engine.drill import run_drill
from engine.drill.scenario import parse_scenario
from engine.errors import ConfigError
from engine.models import NewOutbox
from engine.settings import BackendConfig, Settings
from engine.store import Store
from tests.e2e.configs import REPO
from tests.fakes.fake_telegram import FakeTelegram

# 30 analysis jobs (tier 2, no review) in one hour; every call takes 10 s and uses 1,000 tokens in, 500 out.
HOUR = """
name = "hour"
hours = 1
drain_hours = 1
seed = 7
[workload]
jobs_per_day = 720
[workload.mix]
analysis = 1.0
[twins.default]
latency_s = 10
latency_jitter = 0
tokens_in = 1000
tokens_out = 500
reject_rate = 0
"""


def _backend(name: str, family: str, price_in: float, price_out: float, **extra: Any) -> BackendConfig:
    return BackendConfig(name=name, kind="sim", model=name, family=family, tier=2, price_in_per_mtok=price_in,
                         price_out_per_mtok=price_out, max_concurrency=50, **extra)


@pytest.fixture
def two(tmp_path: Path) -> Settings:
    """alpha (first: the primary) and beta, of two families; alpha $1/$2 per Mtok, beta $0.5/$1."""
    return Settings(home=tmp_path / "operator-home", backends=[_backend("alpha", "a", 1.0, 2.0),
                                                                _backend("beta", "b", 0.5, 1.0)])


def _incident(**fields: Any) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    return "\n[[incidents]]\n" + "\n".join(lines) + "\n"


async def test_a_quiet_hour_as_counted_by_hand(two: Settings) -> None:
    report = await run_drill(two, parse_scenario(HOUR))
    assert (report["submitted"], report["done"], report["failed"], report["still_open"]) == (30, 30, 0, 0)
    assert report["completion_rate"] == 1.0
    # Every job on alpha, the first of the chain: 1,000 x $1 + 500 x $2 per million tokens = $0.002 a job.
    assert report["calls_by_backend"] == {"alpha": {"calls": 30, "ok": 30, "cost_usd": 0.06}}
    assert (report["cost_usd"], report["cost_per_job_usd"]) == (0.06, 0.002)
    assert report["queue_wait_s"]["normal"] == {"n": 30, "p50": 0.0, "p95": 0.0}
    assert (report["alerts"], report["duplicate_notifications"], report["reroutes"]) == (0, 0, 0)
    assert report["notifications_by_kind"]["job_done"] == 30
    assert sum(row["submitted"] for row in report["timeline"]) == 30
    assert report["pulse_runs"] >= 2  # 00:00 and 00:30 at least
    assert not two.home.exists()  # a temporary data folder, never the operator's


async def test_the_same_scenario_config_and_seed_give_the_same_report(two: Settings) -> None:
    scenario = parse_scenario(HOUR.replace("jobs_per_day = 720", "jobs_per_day = 720\noperator_messages = 5")
                              + _incident(backend="alpha", start="00:20", minutes=15, kind="outage"))
    first, second = [await run_drill(two, scenario) for _ in range(2)]
    other = await run_drill(two, scenario, seed=8)
    for report in (first, second, other):
        report.pop("wall_s")
    assert first == second
    assert first != other


async def test_an_outage_of_the_primary_falls_through_and_is_told_once(two: Settings) -> None:
    scenario = parse_scenario(HOUR + _incident(backend="alpha", start="00:00", minutes=60, kind="outage"))
    report = await run_drill(two, scenario)
    assert (report["done"], report["failed"]) == (30, 0)
    alpha = report["calls_by_backend"]["alpha"]
    assert alpha["ok"] == 0 and report["calls_by_backend"]["beta"] == {"calls": 30, "ok": 30, "cost_usd": 0.03}
    assert report["reroutes"] == alpha["calls"]  # each failed call on alpha moved one job to beta
    assert 3 <= alpha["calls"] < 30  # the circuit opened after three: later jobs skipped alpha while it was open
    assert report["alerts"] == 1 and "alpha keeps failing" in report["alert_log"][0]
    assert report["duplicate_notifications"] == 0
    (incident,) = report["incidents"]
    assert (incident["backends"], incident["failed_calls"]) == (["alpha"], alpha["calls"])


async def test_an_expiring_token_is_announced_before_the_first_failure(two: Settings) -> None:
    scenario = parse_scenario(HOUR + _incident(role="primary", start="00:10", minutes=30, kind="auth"))
    report = await run_drill(two, scenario)
    assert (report["done"], report["failed"]) == (30, 0)
    (incident,) = report["incidents"]
    assert incident["first_alert"] == "00:00"  # the pulse's credential check saw the expiry ahead
    assert incident["alerted_by_first_failure"] and incident["failed_calls"] >= 1
    assert report["alert_log"][0].startswith("00:00 ⚠️ The credential of backend alpha expires at")
    assert report["pulse_runs"] >= 3  # it kept running through the incident
    assert report["duplicate_notifications"] == 0


async def test_a_rate_limited_backend_is_skipped_until_its_retry_after(two: Settings) -> None:
    scenario = parse_scenario(HOUR + _incident(backend="alpha", start="00:00", minutes=30, kind="rate_limit",
                                               retry_after_s=600))
    report = await run_drill(two, scenario)
    assert (report["done"], report["failed"]) == (30, 0)
    # One 429 pauses alpha for ten minutes: at most one call per ten minutes of the incident reaches it.
    assert 1 <= report["incidents"][0]["failed_calls"] <= 3
    assert report["alerts"] == 0


@pytest.mark.parametrize(("kind", "alerts"), [("quota", 1), ("garbage", 1), ("slow", 1)])
async def test_other_incident_kinds_lose_no_job(two: Settings, kind: str, alerts: int) -> None:
    extra = {"factor": 1000} if kind == "slow" else {}
    scenario = parse_scenario(HOUR + _incident(backend="alpha", start="00:00", minutes=30, kind=kind, **extra))
    report = await run_drill(two, scenario)
    assert (report["submitted"], report["done"], report["failed"], report["still_open"]) == (30, 30, 0, 0)
    assert report["alerts"] == alerts and report["duplicate_notifications"] == 0


async def test_without_removes_a_backend_as_if_its_provider_were_gone(two: Settings) -> None:
    report = await run_drill(two, parse_scenario(HOUR), without=["alpha"])
    assert report["backends"] == ["beta"] and report["without"] == ["alpha"]
    assert (report["done"], report["failed"]) == (30, 0)
    assert (report["cost_usd"], report["cost_per_job_usd"]) == (0.03, 0.001)
    with pytest.raises(ConfigError, match="--without gamma: no such backend"):
        await run_drill(two, parse_scenario(HOUR), without=["gamma"])
    with pytest.raises(ConfigError, match=r"incidents\[0\]\.backend: no backend 'gamma'"):
        await run_drill(two, parse_scenario(HOUR + _incident(backend="gamma", start="00:00", minutes=5,
                                                             kind="auth")))


async def test_operator_messages_are_answered_and_their_work_queued(two: Settings) -> None:
    scenario = parse_scenario(HOUR.replace("jobs_per_day = 720", "jobs_per_day = 0\noperator_messages = 4\n"
                                           "work_share = 1.0"))
    report = await run_drill(two, scenario)
    assert (report["operator_messages"], report["operator_answered"]) == (4, 4)
    assert report["operator_answer_s"]["p50"] == 10.0  # one call of 10 s, started at once in the operator lane
    assert report["submitted"] == report["submitted_by_persona"] == 4  # each message asked for one job
    assert report["done"] + report["needs_human"] == 4 and report["failed"] == 0


async def test_subscriptions_cost_nothing_and_the_report_says_what_they_saved(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", backends=[_backend("alpha", "a", 1.0, 2.0, subscription=True),
                                                           _backend("beta", "b", 0.5, 1.0)])
    report = await run_drill(settings, parse_scenario(HOUR))
    assert (report["cost_usd"], report["subscription_saved_usd"]) == (0.0, 0.06)
    assert all(report[key] == 0 for key in ("operator_jobs_hit_wall", "cut_off_by_window", "deferred", "resumed",
                                            "extra_paid_usd"))


def test_the_command_prints_one_json_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "hour.toml"
    scenario.write_text(HOUR, encoding="utf-8")
    config = _two_config(tmp_path)
    monkeypatch.setenv("SWITCHBOARD_HOME", str(tmp_path / "home"))
    chart = tmp_path / "drill.png"
    code = main(["drill", str(scenario), "--config", str(config), "--without", "alpha", "--seed", "3", "--json",
                 "--chart", str(chart)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"submitted", "done", "failed", "completion_rate", "cost_per_job_usd", "alerts",
            "duplicate_notifications", "wall_s"} <= set(report)
    assert (report["seed"], report["backends"], report["done"]) == (3, ["beta"], 30)
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "home" / "switchboard.db").exists()
    assert main(["drill", "no-such-scenario", "--json"]) == 1
    assert "unknown scenario 'no-such-scenario'" in json.loads(capsys.readouterr().out)["error"]


async def test_calls_in_flight_when_an_outage_starts_do_not_announce_a_recovery(two: Settings) -> None:
    """Found by a drill: calls started before an outage still succeed after the circuit opened. They prove
    nothing about the backend now, so they must not tell the operator it recovered (and then that it fails
    again): one alert when the circuit opens, one notice when a call started after it succeeds."""
    busy = HOUR.replace("jobs_per_day = 720", "jobs_per_day = 2880").replace("latency_s = 10", "latency_s = 600")
    scenario = parse_scenario(busy + _incident(backend="alpha", start="00:10", minutes=30, kind="outage"))
    report = await run_drill(two, scenario)
    assert (report["failed"], report["still_open"]) == (0, 0)
    assert report["alerts"] == 1 and report["duplicate_notifications"] == 0, report["alert_log"]
    assert report["notifications_by_kind"]["info"] == 1  # "Backend alpha recovered.", after the outage


async def test_drill_from_chat_runs_in_the_background_and_sends_its_report_with_a_chart(two: Settings) -> None:
    async with open_services(two) as services:
        assert (await services.commands.handle("/drill")).startswith("Which drill? /drill NAME, one of:")
        assert (await services.commands.handle("/drill /etc/passwd")).startswith("Which drill?")  # shipped only
        assert (await services.commands.handle("/drill quiet")).startswith("Drill quiet started: 24 simulated")
        assert (await services.commands.handle("/drill seed-day")).startswith("A drill is already running")
        await services.commands.drills.wait()
        [message] = [m for m in await services.store.outbox_all() if m.dedupe_key.startswith("drill:quiet:")]
    assert message.text.startswith("Drill quiet (seed 0, 24 h simulated") and "0 duplicates" in message.text
    chart = Path(str(message.payload["photo_path"]))
    assert chart.parent == two.home / "drills" and _png(chart)


async def test_the_sender_attaches_a_drills_chart(settings: Settings, store: Store, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    report = await run_drill(Settings(home=tmp_path / "h", backends=[_backend("beta", "b", 0.5, 1.0)]),
                             parse_scenario(HOUR))
    png = drill_chart_png(report)
    chart = _written(tmp_path / "drill.png", png)
    await store.add_outbox(NewOutbox(dedupe_key="drill:x", kind="command", text="Drill hour ...", chat_id=4242,
                                     payload={"photo_path": str(chart)}))
    async with FakeTelegram() as fake:
        async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot:
            assert await OutboxSender(settings, store, bot, clock).drain_once() == 1
        [photo] = fake.sent_photos
        assert photo.file is not None and photo.file.content == png
        assert [m.text for m in fake.messages_to(4242) if m.kind != "photo"] == ["Drill hour ..."]


def _png(path: Path) -> bool:
    return path.read_bytes().startswith(b"\x89PNG")


def _written(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_the_report_is_the_same_whatever_the_interpreter_hashes_with(tmp_path: Path) -> None:
    """Determinism across processes: string hashing is randomised per interpreter, and no set or dict order
    may leak into the drill."""
    scenario = tmp_path / "hour.toml"
    scenario.write_text(HOUR.replace("jobs_per_day = 720", "jobs_per_day = 720\noperator_messages = 4")
                        + _incident(role="primary", start="00:15", minutes=20, kind="outage"), encoding="utf-8")
    reports = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO),
               "SWITCHBOARD_HOME": str(tmp_path / "home")}
        env.pop("SWITCHBOARD_CONFIG", None)
        command = [sys.executable, "-m", "bot.cli", "drill", str(scenario), "--config", str(_two_config(tmp_path)),
                   "--json"]
        done = subprocess.run(command, env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        report = json.loads(done.stdout)
        report.pop("wall_s")
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["submitted"] >= 30


def _two_config(folder: Path) -> Path:
    config = folder / "switchboard.toml"
    config.write_text('[[backends]]\nname = "alpha"\nkind = "sim"\nfamily = "a"\n\n'
                      '[[backends]]\nname = "beta"\nkind = "sim"\nfamily = "b"\n', encoding="utf-8")
    return config
