"""Strict configuration: every table refuses a key it does not know (with a "did you mean"), an unknown
SWITCHBOARD_* variable is refused the same way, and times, time zones and ranges are checked at load. Each case
is one line naming the key (issue 12, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.settings import load_settings

_BACKEND = '[[backends]]\nname = "solo"\nkind = "sim"\nfamily = "x"\n'

# (the file, what the one line must say)
FILE_CASES = [
    ("[engine]\nmax_slot = 10\n", "unknown setting engine.max_slot (did you mean max_slots?)"),
    ("[telegram]\noperator_id = [1]\n", "unknown setting telegram.operator_id (did you mean operator_ids?)"),
    ("[pulse]\ninterval_minutes = 5\n", "unknown setting pulse.interval_minutes (did you mean interval_min?)"),
    ('[memory]\nembeder = "minilm"\n', "unknown setting memory.embeder (did you mean embedder?)"),
    ("[memory.weights]\nrecncy = 0.3\n", "unknown setting memory.weights.recncy (did you mean recency?)"),
    ("[job_types.coding]\ntreshold = 8\n", "unknown setting job_types.coding.treshold (did you mean threshold?)"),
    (_BACKEND + 'api_key_envv = "KEY"\n', "unknown setting backends[solo].api_key_envv (did you mean api_key_env?)"),
    (
        _BACKEND + "[backends.sim]\nlatncy_ms = 5\n",
        "unknown setting backends[solo].sim.latncy_ms (did you mean latency_ms?)",
    ),
    ('[routing]\ncodin = ["sim-opus"]\n', "routing.codin: unknown job type 'codin' (did you mean coding?)"),
    ("[engine]\nzzz = 1\n", "unknown setting engine.zzz"),
    ('persona = "Ada"\n', "unknown setting persona (did you mean persona_name?)"),
    ('[pulse]\ntimezone = "Mars/Olympus"\n', "invalid setting pulse.timezone: unknown time zone 'Mars/Olympus'"),
    ('[pulse]\ndigest_time = "29:99"\n', "invalid setting pulse.digest_time: not a time of day: '29:99'"),
    ('[pulse]\nquiet_hours = "25:00-07:00"\n', "invalid setting pulse.quiet_hours: not a time of day: '25:00'"),
    ('[pulse]\nquiet_hours = "22:00"\n', "invalid setting pulse.quiet_hours: not a range of times"),
    ("[pulse]\nstale_job_hours = -1\n", "invalid setting pulse.stale_job_hours"),
    ("[gate]\nwhen_no_other_familly = 'wait'\n",
     "unknown setting gate.when_no_other_familly (did you mean when_no_other_family?)"),
    ("[gate]\nwhen_no_other_family = 'never'\n", "invalid setting gate.when_no_other_family"),
]


@pytest.mark.parametrize(("text", "expected"), FILE_CASES, ids=[c[1].split(" (")[0] for c in FILE_CASES])
def test_a_bad_file_is_refused_with_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config, home=tmp_path / "home", detect_backends=False)
    message = str(refused.value)
    assert message.startswith(f"{config}: ") and expected in message
    assert "\n" not in message
    if "did you mean" not in expected:
        assert "did you mean" not in message


ENV_CASES = [
    ("SWITCHBOARD_ENGINE__MAX_SLOT", "no such setting engine.max_slot (did you mean SWITCHBOARD_ENGINE__MAX_SLOTS?)"),
    ("SWITCHBOARD_ENGIN__MAX_SLOTS", "no such setting engin (did you mean SWITCHBOARD_ENGINE__MAX_SLOTS?)"),
    ("SWITCHBOARD_PULSE__TIMEZON", "no such setting pulse.timezon (did you mean SWITCHBOARD_PULSE__TIMEZONE?)"),
    ("SWITCHBOARD_MEMORY__EMBEDER", "no such setting memory.embeder (did you mean SWITCHBOARD_MEMORY__EMBEDDER?)"),
    ("SWITCHBOARD_HOMEE", "no such setting homee (did you mean SWITCHBOARD_HOME?)"),
]


@pytest.mark.parametrize(("name", "expected"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_an_unknown_switchboard_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.setenv(name, "3")
    with pytest.raises(ConfigError) as refused:
        load_settings(None, home=tmp_path / "home", detect_backends=False)
    assert str(refused.value) == f"environment variable {name}: {expected}"


def test_variables_read_on_purpose_and_real_settings_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in [
        ("SWITCHBOARD_CLAUDE_BIN", "/bin/true"), ("SWITCHBOARD_CODEX_BIN", "/bin/true"),
        ("SWITCHBOARD_OLLAMA_MODEL", "qwen"), ("SWITCHBOARD_HOME", str(tmp_path / "home")),
        ("SWITCHBOARD_ENGINE__MAX_SLOTS", "7"), ("SWITCHBOARD_PULSE__TIMEZONE", "Europe/Berlin"),
        ("SWITCHBOARD_DETECT_BACKENDS", "false"), ("SWITCHBOARD_TELEGRAM__OPERATOR_IDS", "[5]"),
    ]:
        monkeypatch.setenv(name, value)
    settings = load_settings(None)
    assert settings.engine.max_slots == 7 and settings.pulse.timezone == "Europe/Berlin"
    assert settings.telegram.operator_ids == [5] and settings.home == tmp_path / "home"


def test_a_full_valid_file_still_loads(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(
        _BACKEND + 'api_key_env = "SOLO_KEY"\n[backends.sim]\nlatency_ms = 5\n'
        '[engine]\nmax_slots = 4\n[pulse]\ntimezone = "Asia/Tokyo"\ndigest_time = "06:30"\n'
        'quiet_hours = "22:00-07:00"\n[memory]\nembedder = "minilm"\n[memory.weights]\nrecency = 0.3\n'
        '[job_types.coding]\nthreshold = 8\n[routing]\ncoding = ["solo"]\n'
    )
    settings = load_settings(config, home=tmp_path / "home", detect_backends=False)
    assert settings.chain_for("coding") == ["solo"] and settings.job_type("coding").threshold == 8
    assert settings.pulse.quiet_hours == "22:00-07:00" and settings.memory.weights.recency == 0.3


def test_the_readme_example_is_a_valid_strict_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "switchboard.toml"
    config.write_text(example)
    settings = load_settings(config, home=tmp_path / "home", detect_backends=False)
    assert settings.chain_for("coding") == ["opus", "deepseek-r1"] and settings.pulse.quiet_hours == "22:00-07:00"


def test_a_variable_overrides_one_key_of_the_files_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('[engine]\nmax_slots = 4\nreserved_operator_slots = 2\n[pulse]\ntimezone = "Asia/Tokyo"\n')
    monkeypatch.setenv("SWITCHBOARD_ENGINE__MAX_SLOTS", "9")
    monkeypatch.setenv("SWITCHBOARD_ROUTING", '{"coding": ["sim-opus"]}')
    settings = load_settings(config, home=tmp_path / "home", detect_backends=False)
    # The variable wins over the file and leaves the table's other keys as the file has them.
    assert settings.engine.max_slots == 9 and settings.engine.reserved_operator_slots == 2
    assert settings.pulse.timezone == "Asia/Tokyo" and settings.chain_for("coding") == ["sim-opus"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SWITCHBOARD_TELEGRAM__OPERATOR_IDS", "5,6", "environment variable SWITCHBOARD_TELEGRAM__OPERATOR_IDS: "
         "not valid JSON for telegram.operator_ids"),
        ("SWITCHBOARD_ENGINE__MAX_SLOTS", "many", "invalid setting engine.max_slots"),
        ("SWITCHBOARD_HOME__X", "1", "environment variable SWITCHBOARD_HOME__X: no such setting home.x"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, home=tmp_path / "home", detect_backends=False)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[quota]\nwarn_shar = 0.8\n", "unknown setting quota.warn_shar (did you mean warn_share?)"),
        ("[quota]\nwarn_share = 1.5\n", "invalid setting quota.warn_share"),
        ("[quota]\nheadroom_share = 1\n", "invalid setting quota.headroom_share"),
        ("[quota]\nwarm_at = \"7am\"\n", "invalid setting quota.warm_at: not a time of day: '7am'"),
    ],
)
def test_the_quota_table_is_strict(tmp_path: Path, table: str, expected: str) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(table)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, home=tmp_path / "home", detect_backends=False)
    assert expected in str(caught.value)


def test_the_quota_table_and_its_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('[quota]\nwarn_share = 0.8\nwarm_windows = true\nwarm_at = "06:30"\n')
    monkeypatch.setenv("SWITCHBOARD_QUOTA__ENABLED", "false")
    quota = load_settings(config, home=tmp_path / "home", detect_backends=False).quota
    assert (quota.enabled, quota.warn_share, quota.headroom_share, quota.warm_windows, quota.warm_at) == (
        False, 0.8, 0.05, True, "06:30")
