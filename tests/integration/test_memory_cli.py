"""``switchboard memory ...`` handlers, called through argparse as the main CLI does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bot.cli_memory import commands
from engine.settings import Settings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="switchboard")
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, build) in commands().items():
        build(sub.add_parser(name, help=help_text))
    return parser.parse_args(argv)


async def _run(argv: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = _parse(argv)
    code = await args.func(args, settings)
    out, err = capsys.readouterr()
    return code, out, err


async def test_add_search_forget_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(home=tmp_path)
    code, out, _ = await _run(["memory", "add", "The operator is allergic to peanuts.", "--importance", "8",
                               "--json"], settings, capsys)
    added = json.loads(out)
    assert code == 0 and added["action"] == "added"
    code, out, _ = await _run(["memory", "search", "Any food allergies?", "-k", "3", "--json"], settings, capsys)
    results = json.loads(out)
    assert code == 0 and [r["record"]["id"] for r in results] == [added["id"]]
    assert results[0]["record"]["importance"] == 8
    code, out, _ = await _run(["memory", "forget", added["id"], "--json"], settings, capsys)
    assert code == 0 and json.loads(out) == {"id": added["id"], "forgotten": True}
    code, out, err = await _run(["memory", "forget", added["id"]], settings, capsys)
    assert code == 1 and out == "" and "no memory" in err


async def test_core_show_and_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(home=tmp_path, memory={"core_max_bytes": 50})
    code, out, _ = await _run(["memory", "core", "--json"], settings, capsys)
    assert code == 0 and json.loads(out)["text"].startswith("# Core memory")
    small = tmp_path / "small.md"
    small.write_text("I am the operator's assistant.\n", encoding="utf-8")
    code, out, _ = await _run(["memory", "core", "--set", str(small), "--json"], settings, capsys)
    assert code == 0 and json.loads(out)["versions"] == 1
    big = tmp_path / "big.md"
    big.write_text("x" * 80, encoding="utf-8")
    code, out, err = await _run(["memory", "core", "--set", str(big)], settings, capsys)
    assert code == 1 and out == ""
    assert "80 bytes is over the limit of 50 bytes" in err and "Traceback" not in err
    code, out, err = await _run(["memory", "core", "--set", str(tmp_path / "missing.md")], settings, capsys)
    assert code == 1 and "missing.md" in err


def test_importance_is_validated() -> None:
    with pytest.raises(SystemExit):
        _parse(["memory", "add", "x", "--importance", "11"])


async def test_add_is_capped_like_remember_and_stores_clean_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path)
    code, out, err = await _run(["memory", "add", "x" * 20_000], settings, capsys)
    assert code == 1 and out == ""
    assert err.strip() == "switchboard memory: that is 20,000 characters; a memory holds at most 2,000. Shorten it."
    code, out, _ = await _run(["memory", "add", "The operator\u202e drinks\x00 tea.\u200b", "--json"], settings, capsys)
    assert code == 0
    code, out, _ = await _run(["memory", "search", "tea", "--json"], settings, capsys)
    assert [r["record"]["text"] for r in json.loads(out)] == ["The operator drinks tea."]
