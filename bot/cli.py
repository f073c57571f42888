"""The ``switchboard`` command line.

Every command but ``run`` takes ``--json``: then stdout carries exactly one JSON document and nothing else;
messages go to stderr. Errors are one clear line and exit code 1, never a traceback (with ``--json``, stdout
then carries ``{"error": "..."}``). The global options (``--config``, ``--json``) are accepted before or after
the command: ``switchboard doctor --config x.toml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from bot import cli_drill, cli_memory, cli_pulse, cli_work, render
from bot.cli_common import (
    CONFIG_HELP,
    JSON_HELP,
    CommandSpec,
    all_parsers,
    count_from_1_to,
    emit,
    global_options_everywhere,
    json_flag,
    keep_data_private,
    on_store,
)
from engine.errors import OPERATOR_ERRORS, ConfigError, StoreError, describe_error
from engine.vocab import JobState, Priority

if TYPE_CHECKING:  # annotations only: the parser (and so `--help`) loads neither pydantic nor the settings
    from engine.control import Control
    from engine.settings import Settings

    # A command runs on the store without an event loop (``on_store``: returns its exit code) or is a coroutine.
    Handler = Callable[[argparse.Namespace, Settings], int | Coroutine[Any, Any, int]]

# What a command may raise that is told as one line and exit code 1, never a traceback.
_TOLD_ERRORS: tuple[type[Exception], ...] = (StoreError, ConfigError, *OPERATOR_ERRORS)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = _parser(words, json_errors="--json" in words)
    args = parser.parse_args(words)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    # Loaded once the command line is understood: `--help` and a usage error answer without them.
    from engine.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(args, describe_error(exc))
    keep_data_private(settings.home)
    try:
        handler: Handler = args.func
        outcome = handler(args, settings)  # a command on the store has run already (``on_store``): it logs nothing
        if isinstance(outcome, int):
            return outcome
        import asyncio
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return asyncio.run(outcome)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except _TOLD_ERRORS as exc:
        return _fail(args, describe_error(exc))


def _fail(args: argparse.Namespace, message: str) -> int:
    print(f"switchboard: {message}", file=sys.stderr)
    if getattr(args, "json", False):  # stdout still carries one JSON document
        print(json.dumps({"error": message}))
    return 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are also ``{"error": ...}`` on stdout when ``--json`` was given."""

    def error(self, message: str) -> NoReturn:
        if getattr(self, "json_errors", False):
            print(json.dumps({"error": message}))
        super().error(message)


def _parser(words: list[str] | None = None, *, json_errors: bool = False) -> argparse.ArgumentParser:
    """The command line's parser. Given the ``words`` to parse, only the command they name is made, with its
    arguments and actions (making all of them costs a store command about 5 ms, much of it argparse asking
    gettext for each parser's headings); when they name none (``--help``, a typo), every command is listed with
    its help line. Without ``words``, every command is made whole (tests walk them all)."""
    parser = _Parser(prog="switchboard", description="An operator's AI work orchestrator.")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands = _command_table()
    named = None if words is None else _named_command(words, commands)
    for name, (help_text, build) in commands.items():
        if named is None or name == named:
            command = sub.add_parser(name, help=help_text)
            if words is None or name == named:
                build(command)
    global_options_everywhere(parser)
    for each in all_parsers(parser):
        each.json_errors = json_errors  # type: ignore[attr-defined]
    return parser


def _named_command(words: list[str], commands: Mapping[str, CommandSpec]) -> str | None:
    """The command ``words`` name: the first word that is neither an option nor ``--config``'s value."""
    value_follows = False
    for word in words:
        if value_follows:
            value_follows = False
        elif word == "--config":
            value_follows = True
        elif not word.startswith("-"):
            return word if word in commands else None
    return None


def _command_table() -> dict[str, CommandSpec]:
    """Every command, in the order ``--help`` lists them: its help line and what builds its arguments."""
    return {
        "run": ("start the engine and the operator's channel (Telegram or console)", _build_run),
        "jobs": ("add, list, show, cancel and retry jobs", _build_jobs),
        "status": ("engine, slots, queue, backpressure, backends", _build_status),
        "stats": ("totals, completion rate, throughput and cost", _build_stats),
        "backends": ("backends and their state; pause or resume one", _build_backends),
        "doctor": ("check what run needs: config, Telegram, credentials, data folder", _build_doctor),
        **cli_memory.commands(),
        **cli_pulse.commands(),
        **cli_drill.commands(),
    }


def _build_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("--no-console", action="store_true", help="do not read commands from stdin")
    run.set_defaults(func=_run)


def _build_jobs(jobs_command: argparse.ArgumentParser) -> None:
    jobs = jobs_command.add_subparsers(metavar="ACTION")
    add = jobs.add_parser("add", help="queue a job")
    add.add_argument("text", help="what to do, in your words")
    add.add_argument("--type", default="analysis", help="job type: coding, research, writing, ... (default analysis)")
    add.add_argument("--project", help="the project it belongs to (works in its folder)")
    add.add_argument("--priority", default="normal", choices=[p.name.lower() for p in Priority],
                     help="queue priority (default normal)")
    add.add_argument("--key", help="idempotency key: the same key never creates a second job")
    json_flag(add).set_defaults(func=on_store(_jobs_add))
    listing = jobs.add_parser("list", help="list recent jobs")
    listing.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    listing.add_argument("--limit", type=count_from_1_to(10_000), default=30,
                         help="at most this many (1 to 10000, default 30)")
    json_flag(listing).set_defaults(func=on_store(_jobs_list))
    show = jobs.add_parser("show", help="a job with its attempts, reviews and events")
    show.add_argument("id", type=int, help="the job's number")
    json_flag(show).set_defaults(func=on_store(_jobs_show))
    for verb in ("cancel", "retry", "approve", "reroute"):
        action = jobs.add_parser(verb, help=f"{verb} a job")
        action.add_argument("id", type=int, help="the job's number")
        json_flag(action).set_defaults(func=on_store(_jobs_verb), verb=verb)
    cli_pulse.add_answer(jobs)
    cli_work.add_job_actions(jobs)


def _build_status(status: argparse.ArgumentParser) -> None:
    status.add_argument("--check", action="store_true", help="exit 1 unless a running engine was seen recently")
    json_flag(status).set_defaults(func=on_store(_status))


def _build_stats(stats: argparse.ArgumentParser) -> None:
    stats.add_argument("--since", default="7d", help="how far back: 30m, 12h, 7d, 2w (default 7d)")
    json_flag(stats).set_defaults(func=on_store(_stats))


def _build_backends(backends: argparse.ArgumentParser) -> None:
    json_flag(backends).set_defaults(func=on_store(_backends))
    backend_actions = backends.add_subparsers(metavar="ACTION")
    for verb in ("pause", "resume"):
        action = backend_actions.add_parser(verb, help=f"{verb} a backend")
        action.add_argument("name", help="the backend's name (switchboard backends lists them)")
        json_flag(action).set_defaults(func=on_store(_backend_verb), verb=verb)


def _build_doctor(doctor: argparse.ArgumentParser) -> None:
    json_flag(doctor).set_defaults(func=_doctor)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import run_switchboard

    return await run_switchboard(settings, console=not args.no_console)


async def _jobs_add(args: argparse.Namespace, control: Control) -> int:
    job, created = await control.add_job(
        args.text,
        type=args.type,
        project=args.project,
        priority=Priority.parse(args.priority),
        idempotency_key=args.key,
    )
    verb = "queued" if created else "already exists"
    emit(
        args,
        {**job.model_dump(mode="json"), "created": created},
        f"#{job.id} {verb}: {job.type} (tier {job.tier}) {job.title}",
    )
    return 0


async def _jobs_list(args: argparse.Namespace, control: Control) -> int:
    states = [JobState(args.state)] if args.state else None
    jobs = await control.store.list_jobs(states=states, limit=args.limit)
    emit(
        args,
        [j.model_dump(mode="json", exclude={"result_text"}) for j in jobs],
        "\n".join(render.job_line(j) for j in jobs) or "no jobs",
    )
    return 0


async def _jobs_show(args: argparse.Namespace, control: Control) -> int:
    job = await control.job(args.id)
    attempts = await control.store.job_attempts(job.id)
    events = await control.store.job_events(job.id)
    reviews = await control.store.job_reviews(job.id)
    data = {
        "job": job.model_dump(mode="json"),
        "attempts": [a.model_dump() for a in attempts],
        "events": [e.model_dump() for e in events],
        "reviews": [r.model_dump() for r in reviews],
    }
    emit(args, data, render.job_detail(job, attempts, events, reviews))
    return 0


async def _jobs_verb(args: argparse.Namespace, control: Control) -> int:
    job = await getattr(control, args.verb)(args.id)
    emit(args, job.model_dump(mode="json"), f"#{job.id} is now {job.state.value}")
    return 0


async def _status(args: argparse.Namespace, control: Control) -> int:
    status = await control.status()
    emit(args, status, render.status_text(status))
    if args.check and not status["engine"]["alive"]:
        print("switchboard: no running engine seen on this data folder recently", file=sys.stderr)
        return 1
    return 0


async def _stats(args: argparse.Namespace, control: Control) -> int:
    from engine.control import parse_duration

    since = control.clock.now() - parse_duration(args.since)
    stats = await control.store.stats(since, [b.name for b in control.settings.backends if b.simulated])
    emit(args, stats.model_dump(), render.stats_text(stats))
    return 0


async def _backends(args: argparse.Namespace, control: Control) -> int:
    backends = (await control.status())["backends"]
    emit(args, backends, "\n".join(render.backend_line(b) for b in backends))
    return 0


async def _backend_verb(args: argparse.Namespace, control: Control) -> int:
    settings = control.settings
    try:
        settings.backend(args.name)
    except KeyError:
        raise ValueError(
            f"unknown backend {args.name!r} (known: {', '.join(b.name for b in settings.backends)})"
        ) from None
    if args.verb == "pause":
        await control.pause_backend(args.name)
    else:
        await control.resume_backend(args.name)
    emit(args, {"backend": args.name, "paused": args.verb == "pause"}, f"{args.name}: {args.verb}d")
    return 0


async def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot.doctor import check_line, passed, run_checks

    checks = await run_checks(settings)
    ok = passed(checks)
    emit(args, {"ok": ok, "checks": checks}, "\n".join(map(check_line, checks)))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
