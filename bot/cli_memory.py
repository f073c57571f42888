"""``switchboard memory add|search|forget|core``: the operator's command line onto memory.

``commands()`` names the ``memory`` command and what builds it; each subcommand sets ``func`` to an async handler
``handler(args, settings) -> int``. With ``--json`` stdout carries exactly one JSON document; errors go to
stderr as one line and the exit code is 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli_common import CommandSpec, count_from_1_to, json_flag
from engine.text import memory_text
from memory.errors import MemoryStoreError

# Search asks the vector store for k × candidate_multiplier rows: a count beyond what anyone reads is refused.
MAX_RESULTS = 100

if TYPE_CHECKING:  # annotations only: registering the commands loads neither the settings nor pydantic
    from engine.settings import Settings
    from memory.semantic import SemanticMemory

    Handler = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def commands() -> dict[str, CommandSpec]:
    return {"memory": ("inspect and edit the assistant's memory", _build)}


def _build(memory: argparse.ArgumentParser) -> None:
    commands = memory.add_subparsers(dest="memory_command", required=True, metavar="{add,search,forget,core}")

    add = commands.add_parser("add", help="remember a fact or preference")
    add.add_argument("text", help="the fact or preference, in your words")
    add.add_argument("--kind", default="semantic", help="semantic (default), preference, episodic, ...")
    add.add_argument("--importance", type=_importance, default=5, help="1-10 (default 5)")
    add.add_argument("--project", help="only for this project (default: everywhere)")
    _json_flag(add)
    add.set_defaults(func=_guarded(_add))

    search = commands.add_parser("search", help="find memories relevant to a query")
    search.add_argument("query", help="what to look for")
    search.add_argument("-k", type=count_from_1_to(MAX_RESULTS), default=5,
                        help=f"how many results (1 to {MAX_RESULTS}, default 5)")
    search.add_argument("--project", help="include this project's memories")
    _json_flag(search)
    search.set_defaults(func=_guarded(_search))

    forget = commands.add_parser("forget", help="delete a memory by id")
    forget.add_argument("id", help="the memory's id (memory search shows it)")
    _json_flag(forget)
    forget.set_defaults(func=_guarded(_forget))

    core = commands.add_parser("core", help="show or replace core memory (core.md)")
    mode = core.add_mutually_exclusive_group()
    mode.add_argument("--set", dest="set_file", metavar="FILE", help="replace core.md with FILE ('-' for stdin)")
    mode.add_argument("--show", action="store_true", help="print core.md (the default)")
    _json_flag(core)
    core.set_defaults(func=_guarded(_core))


def _json_flag(parser: argparse.ArgumentParser) -> None:
    json_flag(parser)


def _importance(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 10:
        raise argparse.ArgumentTypeError("importance must be between 1 and 10")
    return number


def _guarded(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return await handler(args, settings)
        except (MemoryStoreError, OSError, ValueError) as exc:
            print(f"switchboard memory: {exc}", file=sys.stderr)
            if getattr(args, "json", False):  # stdout still carries one JSON document
                print(json.dumps({"error": str(exc)}, ensure_ascii=False))
            return 1
    return run


@asynccontextmanager
async def _open(settings: Settings) -> AsyncIterator[SemanticMemory]:
    from memory.embedders import build_embedder  # numpy, and the model on first use
    from memory.semantic import SemanticMemory  # LanceDB and pyarrow: only for the commands that search

    embedder = build_embedder(settings.memory)
    try:
        memory = await SemanticMemory.open(settings.home, embedder, settings.memory)
        try:
            yield memory
        finally:
            await memory.close()
    finally:
        await embedder.aclose()


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, ensure_ascii=False) if getattr(args, "json", False) else text)


async def _add(args: argparse.Namespace, settings: Settings) -> int:
    text = memory_text(args.text)  # before the embedder loads: the same limit as /remember
    async with _open(settings) as memory:
        outcome = await memory.add(text, kind=args.kind, importance=args.importance, project=args.project)
    verbs = {"added": "remembered", "merged_exact": "already known (merged)", "merged_near": "near duplicate (merged)"}
    _emit(args, outcome.model_dump(), f"{verbs[outcome.action]}: {outcome.id}")
    return 0


async def _search(args: argparse.Namespace, settings: Settings) -> int:
    async with _open(settings) as memory:
        found = await memory.search(args.query, k=args.k, project=args.project)
    if getattr(args, "json", False):
        _emit(args, [m.model_dump() for m in found], "")
        return 0
    if not found:
        print("no relevant memories")
    for m in found:
        scope = f" [{m.record.project}]" if m.record.project else ""
        print(f"{m.record.id}  {m.score:.3f}  {m.record.kind}{scope}  {m.record.text}")
    return 0


async def _forget(args: argparse.Namespace, settings: Settings) -> int:
    async with _open(settings) as memory:
        removed = await memory.forget(args.id)
    if not removed:
        if getattr(args, "json", False):
            _emit(args, {"id": args.id, "forgotten": False}, "")
        print(f"switchboard memory: no memory with id {args.id!r}", file=sys.stderr)
        return 1
    _emit(args, {"id": args.id, "forgotten": True}, f"forgot {args.id}")
    return 0


async def _core(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio  # after parsing, like the rest of a command's imports

    from memory.core import CoreMemory

    core = CoreMemory(settings.home, settings.memory.core_max_bytes)
    if args.set_file:
        source = sys.stdin.read() if args.set_file == "-" else await asyncio.to_thread(
            Path(args.set_file).read_text, encoding="utf-8"
        )
        await asyncio.to_thread(core.write, source)
        document = {"path": str(core.path), "size_bytes": len(source.encode("utf-8")),
                    "max_bytes": core.max_bytes, "versions": len(core.versions())}
        _emit(args, document, f"core memory updated ({document['size_bytes']} of {core.max_bytes} bytes)")
        return 0
    text = await asyncio.to_thread(core.read)
    document = {"path": str(core.path), "text": text, "size_bytes": len(text.encode("utf-8")),
                "max_bytes": core.max_bytes, "versions": len(core.versions())}
    _emit(args, document, text.rstrip("\n"))
    return 0
