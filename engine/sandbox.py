"""The worker's boundary: what a CLI worker (``claude``, ``codex``) sees of this machine.

A worker is untrusted code with a model inside, running shell commands. Two layers keep Switchboard's own
things out of its reach:

1. **An environment allow-list, always.** The worker gets ``PATH``, locale (``LANG``, ``LC_*``, ``TZ``),
   ``TERM``, the network settings it needs to reach its API (proxy and CA variables), a ``HOME`` and a
   ``TMPDIR`` of its own inside the job folder, its backend's own variables (its credential, its config
   folder, the CLI's own settings) and what ``[[backends]] env_passthrough`` names. Never the Telegram token,
   the webhook secret or a key another backend (or the embedder) names, whatever a passthrough says.
2. **bubblewrap, where it works.** The worker runs in ``bwrap`` with new namespaces (pid, ipc, uts, user,
   cgroup; the network is shared: the model API needs it) on an empty root holding only: the system read-only
   (``/usr``, ``/bin``, ``/lib*``, a list of ``/etc`` entries without secrets), its binary and the ``PATH``
   folders read-only, a private ``/tmp``, ``/dev`` and ``/proc``, its job folder and workspace read-write, the
   repository's git folder read-only when its workspace is a git worktree, and its CLI's config folder (a
   logged-in ``claude`` keeps its OAuth login there). Not the data folder (database, ``core.md``, memory,
   other jobs), the config file or the operator's home: where a folder that is bound holds one of them, it is
   masked with an empty one.

   The worker stays in the process group the engine started (no ``--new-session``: the engine already gave it
   a session of its own without a terminal), so the timeout and cancel kill of the whole group still work;
   ``--die-with-parent`` and the pid namespace take every process in the sandbox down with it.

``[engine] sandbox``: ``"auto"`` (bubblewrap when it is installed and works here, else the allow-list alone,
said at start-up and by ``doctor``), ``"bwrap"`` (refuse to start without it) or ``"off"`` (allow-list only).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.errors import SandboxUnavailable

if TYPE_CHECKING:
    from engine.settings import Settings

SandboxMode = Literal["auto", "bwrap", "off"]

# Never handed to a worker, even when a passthrough names them.
ALWAYS_SECRET = frozenset({"TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"})
_BASE_VARS = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
# Network settings the worker needs to reach its model API the way this machine does.
_NETWORK_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
                 "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a worker needs: users and groups (no shadow), name resolution, TLS roots, the dynamic loader,
# time zone, alternatives (symlinks under /usr/bin point there). Not the rest: /etc may hold secrets
# (/etc/switchboard/env in the systemd deployment, SSH host keys).
_ETC_ENTRIES = ("passwd", "group", "hosts", "host.conf", "hostname", "resolv.conf", "nsswitch.conf", "gai.conf",
                "services", "protocols", "ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies",
                "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "os-release",
                "lsb-release", "debian_version", "mime.types", "gitconfig", "inputrc", "bash.bashrc", "profile",
                "terminfo", "python3", "npmrc")
_ETC_MASKED = ("/etc/ssl/private",)  # private TLS keys live inside /etc/ssl
_NAMESPACES = ("--unshare-all", "--share-net", "--die-with-parent", "--cap-drop", "ALL")
_WORKER_HOME = ".home"
_WORKER_TMP = ".tmp"


@dataclass(frozen=True)
class Bubblewrap:
    path: str
    version: str


@dataclass(frozen=True)
class WorkerMounts:
    """What one worker may see besides the system and its binary: ``writable`` folders (job folder first, its
    working directory), folders it only reads and its CLI's config folders (read-write)."""

    writable: tuple[Path, ...]
    readable: tuple[Path, ...] = ()
    config_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class _Mount:
    path: Path
    op: str  # "--ro-bind", "--bind", "--tmpfs", "mask-file"

    def args(self) -> list[str]:
        text = str(self.path)
        if self.op == "--tmpfs":
            return ["--tmpfs", text]
        if self.op == "mask-file":
            return ["--ro-bind", "/dev/null", text]
        return [self.op, text, text]


def find_bubblewrap(which: Callable[[str], str | None] = shutil.which) -> tuple[Bubblewrap | None, str]:
    """The bwrap found on PATH if it can build a sandbox on this machine (tried once, with ``true``),
    else None and why not."""
    path = which("bwrap")
    if path is None:
        return None, "bubblewrap is not installed (no bwrap on PATH)"
    probe = [path, *_NAMESPACES, *_system_args(), "--dev", "/dev", "--proc", "/proc", "--", "true"]
    try:
        tried = subprocess.run(probe, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} cannot run: {exc}"
    if tried.returncode != 0:
        reason = (tried.stderr.strip().splitlines() or [f"exit code {tried.returncode}"])[-1]
        return None, f"{path} cannot create a sandbox here: {reason}"
    match = re.search(r"\d+(?:\.\d+)+", version)
    return Bubblewrap(path, match.group(0) if match else "unknown version"), ""


@dataclass(frozen=True)
class Sandbox:
    """The boundary every CLI worker of one engine runs in. ``hidden`` are the paths a worker must never see
    (data folder, config file, operator's home); ``secret_vars`` the variables it must never get."""

    mode: SandboxMode = "auto"
    bwrap: Bubblewrap | None = None
    problem: str = ""
    hidden: tuple[Path, ...] = ()
    secret_vars: frozenset[str] = field(default=ALWAYS_SECRET)

    @classmethod
    def detect(cls, mode: SandboxMode = "auto", *, hidden: Iterable[Path] = (), secret_vars: Iterable[str] = (),
               which: Callable[[str], str | None] = shutil.which) -> Sandbox:
        """Look for bubblewrap as ``mode`` asks. Raises ``SandboxUnavailable`` for ``"bwrap"`` without it."""
        bwrap, problem = (None, "sandbox = \"off\" in the configuration") if mode == "off" else find_bubblewrap(which)
        if mode == "bwrap" and bwrap is None:
            raise SandboxUnavailable(f"engine.sandbox is \"bwrap\" but {problem}; install the bubblewrap package "
                                     "or set engine.sandbox = \"auto\"")
        paths = tuple(dict.fromkeys(Path(p).expanduser().resolve() for p in hidden))
        return cls(mode, bwrap, problem, paths, ALWAYS_SECRET | frozenset(v for v in secret_vars if v))

    @classmethod
    def for_settings(cls, settings: Settings) -> Sandbox:
        """The engine's sandbox: ``engine.sandbox`` from the settings, hiding the data folder, the config file
        and the operator's home, holding back every secret variable the settings name."""
        hidden = [settings.home, Path.home(), *([settings.config_path] if settings.config_path else [])]
        return cls.detect(settings.engine.sandbox, hidden=hidden, secret_vars=settings.secret_env_names())

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def describe(self) -> str:
        """One plain line for ``doctor`` and the start-up output."""
        if self.bwrap is not None:
            return (f"bubblewrap {self.bwrap.version} at {self.bwrap.path}: workers see only their job folder, "
                    "workspace and tools, not the data folder, the config file or your home")
        return (f"NO SANDBOX ({self.problem}): workers run as this user with only an environment allow-list and "
                "can read whatever this user can, the database included; install bubblewrap")

    # --- The environment -----------------------------------------------------------------------------------

    def environment(self, source: Mapping[str, str], *, names: Iterable[str] = (), prefixes: Iterable[str] = (),
                    own: Iterable[str] = (), values: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's environment from ``source``: the base allow-list, then ``names`` and variables starting
        with ``prefixes`` (the CLI's own settings, the passthrough), never a secret variable unless it is in
        ``own`` (this backend's credential), then ``values`` set as given."""
        own = set(own)
        prefixes = tuple(prefixes)
        allowed = {*_BASE_VARS, *_NETWORK_VARS, *names}
        env = {}
        for name, value in source.items():
            wanted = name in allowed or name.startswith("LC_") or (prefixes and name.startswith(prefixes))
            if wanted and (name not in self.secret_vars or name in own):
                env[name] = value
        env.update(values or {})
        return env

    @contextlib.contextmanager
    def worker_dirs(self, job_dir: Path | None) -> Iterator[tuple[Path, Path]]:
        """The worker's own ``HOME`` and ``TMPDIR``: in its job folder, or in a temporary folder removed
        afterwards when it has none."""
        with contextlib.ExitStack() as stack:
            base = job_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchboard-worker-")))
            home, tmp = base / _WORKER_HOME, base / _WORKER_TMP
            home.mkdir(parents=True, exist_ok=True)
            tmp.mkdir(parents=True, exist_ok=True)
            yield home, tmp

    # --- The command ---------------------------------------------------------------------------------------

    def command(self, argv: list[str], mounts: WorkerMounts, env: Mapping[str, str]) -> list[str]:
        """``argv`` as run in this sandbox: unchanged without bubblewrap, else wrapped in ``bwrap``."""
        if self.bwrap is None:
            return argv
        binary = os.path.realpath(argv[0])
        tools = _tool_paths(binary, env.get("PATH", "")) + _path_dirs(env.get("PATH", ""), self.hidden)
        mounts_list = [_Mount(p, "--ro-bind") for p in (*tools, *mounts.readable)]
        mounts_list += [_Mount(p, "--bind") for p in (*mounts.writable, *mounts.config_dirs)]
        # A folder that is itself hidden (a workspace set to the data folder) is never shown.
        mounts_list = [m for m in mounts_list if m.path not in self.hidden]
        mounts_list += _masks(mounts_list, self.hidden)
        # Parents before children, so a mask covers what a folder above it showed and a job folder shows
        # through the mask over the data folder around it.
        mounts_list.sort(key=lambda m: len(m.path.parts))
        args = [self.bwrap.path, *_NAMESPACES, *_system_args(), "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp"]
        for mount in _unique(mounts_list):
            args += mount.args()
        cwd = mounts.writable[0] if mounts.writable else Path("/tmp")
        # The root's own folders (the way down to each mount) read-only too; /tmp stays private and writable.
        return [*args, "--remount-ro", "/", "--chdir", str(cwd), "--", binary, *argv[1:]]


def _system_args() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC_ENTRIES:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            args += ["--ro-bind-try", path, path]
    for path in _ETC_MASKED:
        if os.path.isdir(path):
            args += ["--tmpfs", path]
    return args


def _tool_paths(binary: str, path_value: str) -> list[Path]:
    """The binary's real file, its package folder (an npm package's, found by its package.json) and the
    interpreter its ``#!`` line names (``#!/usr/bin/env node``: the ``node`` on ``PATH``, which may live in
    the operator's home, as nvm installs it)."""
    real = Path(binary)
    paths = [real]
    for parent in list(real.parents)[:3]:
        if (parent / "package.json").is_file():
            paths.append(parent)
            break
    with contextlib.suppress(OSError):
        with real.open("rb") as handle:
            first = handle.readline(256)
        if first.startswith(b"#!"):
            words = first[2:].decode("utf-8", "replace").split()
            if words and Path(words[0]).name == "env":
                words = [shutil.which(w, path=path_value) or "" for w in words[1:] if not w.startswith("-")][:1]
            if words and words[0].startswith("/"):
                paths.append(Path(words[0]))  # where PATH finds it (a folder of the home is not bound whole)
                paths.append(Path(os.path.realpath(words[0])))
    return [p for p in paths if not _under_system(p)]


def _under_system(path: Path) -> bool:
    return any(path.is_relative_to(d) for d in ("/usr", "/bin", "/sbin", "/lib", "/lib64"))


def _path_dirs(path_value: str, hidden: tuple[Path, ...]) -> list[Path]:
    """The ``PATH`` folders outside the system and outside anything hidden (tools in the operator's home or
    the data folder stay out)."""
    found = []
    for entry in path_value.split(os.pathsep):
        path = Path(entry)
        if not path.is_absolute() or not path.is_dir() or _under_system(path) or path == Path("/"):
            continue
        if any(path.is_relative_to(h) or h.is_relative_to(path) for h in hidden):
            continue
        found.append(path)
    return found


def _masks(mounts: list[_Mount], hidden: tuple[Path, ...]) -> list[_Mount]:
    """An empty folder (or file) over every hidden path that a bound folder would otherwise show."""
    masks = []
    for path in hidden:
        if any(path != m.path and path.is_relative_to(m.path) for m in mounts):
            masks.append(_Mount(path, "--tmpfs" if path.is_dir() else "mask-file"))
    return masks


def _unique(mounts: list[_Mount]) -> list[_Mount]:
    seen: set[tuple[Path, str]] = set()
    kept = []
    for mount in mounts:
        if (mount.path, mount.op) not in seen and mount.path.exists():
            seen.add((mount.path, mount.op))
            kept.append(mount)
    return kept
