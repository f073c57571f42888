"""``switchboard jobs diff|merge``: the change a job of a git project made on its branch, and merging it.

``register(subparsers)`` adds the two actions to ``jobs``; errors become one line on stderr and exit code 1 by
``bot.cli.main``. A merge that would not be a fast-forward or a clean merge changes nothing and exits 1, naming
the conflicting files.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bot.cli_common import emit, json_flag, with_control

if TYPE_CHECKING:
    from engine.control import Control
    from engine.settings import Settings


def add_job_actions(jobs: Any) -> None:
    """``jobs diff`` and ``jobs merge``, added to the ``jobs`` command's actions."""
    diff = jobs.add_parser("diff", help="the change a job made on its branch")
    diff.add_argument("id", type=int, help="the job's number")
    diff.add_argument("--stat", action="store_true", help="only the summary: files changed, lines added, removed")
    json_flag(diff).set_defaults(func=_diff)
    merge = jobs.add_parser("merge", help="merge a done job's branch into the project's current branch")
    merge.add_argument("id", type=int, help="the job's number")
    json_flag(merge).set_defaults(func=_merge)


async def _diff(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        job, text = await control.job_diff(args.id, stat=args.stat)
        emit(args, {"job": job.id, "branch": job.branch, "base": job.base_commit, "diff": text},
             text.rstrip() or f"job #{job.id} changed nothing on {job.branch}")
        return 0

    return await with_control(settings, go)


async def _merge(args: argparse.Namespace, settings: Settings) -> int:
    async def go(control: Control) -> int:
        job, outcome = await control.job_merge(args.id)
        text = (f"#{job.id}: {job.branch} merged ({outcome.how})" if outcome.merged
                else f"#{job.id} not merged: {outcome.how}"
                + (f"; conflicting files: {', '.join(outcome.conflicts)}" if outcome.conflicts else "")
                + "; nothing was changed")
        emit(args, {"job": job.id, "branch": job.branch, "merged": outcome.merged, "how": outcome.how,
                    "conflicts": list(outcome.conflicts)}, text)
        return 0 if outcome.merged else 1

    return await with_control(settings, go)


__all__ = ["add_job_actions"]
