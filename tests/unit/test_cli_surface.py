"""The command line's surface cannot drift (issue 12, item 5): the README's command list is exactly the
parser's commands and options, every option has help, `--help` works for every command, and the global
options (--config, --json) are accepted after the command as well as before it."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import pytest

from bot.cli import _parser, main

GLOBAL = {"-h", "--help", "--config", "--json"}


def _readme_commands() -> dict[tuple[str, ...], set[str]]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Command line\n\n```\n", 1)[1].split("```", 1)[0]
    commands: dict[tuple[str, ...], set[str]] = {}
    for line in block.splitlines():
        words = re.split(r"\s{2,}\(", line)[0].split()  # a comment in brackets after two spaces is not syntax
        assert words[0] == "switchboard", line
        path = list(itertools.takewhile(lambda w: re.fullmatch(r"[a-z]+(\|[a-z]+)*", w), words[1:]))
        options = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(words[1 + len(path):])))
        for combo in itertools.product(*(word.split("|") for word in path)):
            commands[combo] = options
    return commands


Parsers = dict[tuple[str, ...], argparse.ArgumentParser]


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Parsers:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found.update(_parsers(command, (*path, name)))
    return found


def _commands() -> Parsers:
    return {path: p for path, p in _parsers(_parser()).items() if p.get_default("func") is not None}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings} - GLOBAL


def test_the_readme_lists_exactly_the_commands_and_their_options() -> None:
    readme, parsed = _readme_commands(), _commands()
    assert sorted(readme) == sorted(parsed)
    for path, parser in parsed.items():
        assert readme[path] == _options(parser), " ".join(path)


def test_every_option_and_argument_has_help() -> None:
    for path, parser in _parsers(_parser()).items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{' '.join(path)} {action.dest}"


@pytest.mark.parametrize("path", sorted(_commands()), ids=" ".join)
def test_help_works_for_every_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: switchboard {' '.join(path)}")
    assert all(option in shown for option in _options(_commands()[path]) | {"--config"})


def test_json_is_accepted_by_every_command_but_run() -> None:
    for path, parser in _commands().items():
        assert ("--json" in parser._option_string_actions) is (path != ("run",)), " ".join(path)
        assert "--config" in parser._option_string_actions


@pytest.mark.parametrize(
    ("argv", "config", "as_json"),
    [
        (["doctor", "--config", "x.toml"], "x.toml", False),
        (["doctor", "--config", "x.toml", "--json"], "x.toml", True),
        (["--json", "--config", "y.toml", "jobs", "list"], "y.toml", True),
        (["jobs", "--config", "z.toml", "cancel", "3", "--json"], "z.toml", True),
        (["backends", "resume", "opus", "--json"], None, True),
        (["--json", "status"], None, True),
        (["memory", "search", "sqlite", "--config", "m.toml", "--json"], "m.toml", True),
        (["run", "--config", "r.toml"], "r.toml", False),
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str], config: str | None, as_json: bool) -> None:
    args = _parser().parse_args(argv)
    assert args.config == config and args.json is as_json


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "add", "count the widgets", "--type", "research", "--priority", "high"],
        ["--config", "jobs", "status", "--check"],  # "jobs" is --config's value here, not the command
        ["--json", "--config", "y.toml", "jobs", "list", "--state", "done"],
        ["jobs", "answer", "4", "yes"],
        ["jobs", "merge", "4"],
        ["backends", "pause", "opus"],
        ["schedule", "add", "mail", "check mail", "--type", "triage", "--every", "1h"],
        ["memory", "search", "sqlite", "-k", "3"],
        ["drill", "seed-day", "--without", "sim-gpt"],
        ["run", "--no-console"],
    ],
    ids=" ".join,
)
def test_the_parser_built_for_the_words_reads_them_as_the_whole_parser_does(argv: list[str]) -> None:
    """``main`` builds only the command its words name; what it reads must not differ from the whole parser."""
    whole, built = vars(_parser().parse_args(argv)), vars(_parser(argv).parse_args(argv))
    handlers = [getattr(h, "__wrapped__", h) for h in (whole.pop("func"), built.pop("func"))]  # on_store wraps
    assert built == whole
    assert handlers[1] is handlers[0]


def test_only_the_named_command_is_made_and_without_one_every_command_is_listed() -> None:
    made = _parsers(_parser(["jobs", "list", "--json"]))
    assert ("jobs", "list") in made and ("jobs", "merge") in made
    assert {path[0] for path in made if path} == {"jobs"}
    every = {path[0] for path in _parsers(_parser()) if path}
    for words in (["--help"], [], ["jbos", "list"]):
        listed = _parsers(_parser(words))
        assert {path[0] for path in listed if path} == every and ("memory", "search") not in listed


def test_jobs_add_type_is_optional_as_the_readme_says() -> None:
    args = _parser().parse_args(["jobs", "add", "count the widgets"])
    assert args.type == "analysis"


def test_a_usage_error_with_json_is_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "show", "abc", "--json"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and json.loads(out) == {"error": "argument id: invalid int value: 'abc'"}
    assert "usage: switchboard jobs show" in err
    with pytest.raises(SystemExit):
        main(["jobs", "show", "abc"])
    assert capsys.readouterr().out == ""  # without --json, nothing on stdout
