"""Every error the engine and the bot raise on purpose, in one tree, and the one text the operator reads for it.

Hierarchy::

    SwitchboardError                     anything Switchboard refuses or cannot do, on purpose
    ├── ConfigError                      the configuration cannot be used (the message names the key)
    ├── InvalidJob (ValueError)          a request that cannot become a job: unknown type, empty or oversized text,
    │                                    a file of a type or size not accepted
    ├── NotFound (LookupError)           no job, schedule or project by that id or name
    ├── IllegalTransition                a job state change the state machine forbids (nothing written)
    ├── UnparseableReview (ValueError)   a reviewer's answer with no valid verdict
    ├── WorkspaceError (ValueError)      a path leaving its job folder, a bad job id or file name
    ├── StoreError                       the database cannot be opened or written (corrupt, full, permissions)
    │   ├── LostDatabase                 the database is missing or empty but the data folder was used before
    │   └── EngineRunning                another live engine holds the data folder's engine lease
    ├── Busy                             another connection holds the write lock; nothing was written (the
    │                                    store retries it and raises StoreError when it gives up)
    ├── LeaseLost                        the worker no longer owns the job (lease swept, job cancelled)
    ├── GateRefused                      the database refused "done" without a passing review by another family
    ├── AlreadyRunning                   another engine holds the data folder's lock
    ├── SandboxUnavailable               sandbox = "bwrap" is configured but bubblewrap cannot run here
    └── ChannelRefused                   the Telegram channel will not start with this configuration

    Leaves kept in their own packages (memory never imports engine; prompts is a leaf package):

    memory.errors.MemoryStoreError       anything the memory package refuses or cannot do
    ├── CoreMemoryTooLarge               an edit of core.md over the byte limit
    ├── MemoryNotFound                   an id that names no memory
    └── EmbedderError                    an embedder could not produce vectors
    prompts.UnknownPrompt (LookupError)  no prompt file of that name
    prompts.MissingPlaceholder (KeyError) a template rendered without one of its values

The builtin bases in brackets stay because callers catch them (``except ValueError`` around parsing and
validation, ``LookupError``/``KeyError`` where a name is looked up). Third-party exceptions are translated at the
boundary (``raise StoreError(...) from exc``).

``describe_error`` turns any of them (and the builtin ``ValueError``/``KeyError`` an operator command can raise)
into the one line the operator reads; ``OPERATOR_ERRORS`` is what the command surfaces answer with that line
instead of treating as a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prompts import MissingPlaceholder

if TYPE_CHECKING:
    from engine.models import JobState


class SwitchboardError(Exception):
    """Base class of every error the engine and the bot raise on purpose."""


class ConfigError(SwitchboardError):
    """The configuration cannot be used. The message names the offending key."""


class InvalidJob(SwitchboardError, ValueError):
    """The request cannot become a job (unknown type, empty or oversized prompt)."""


class NotFound(SwitchboardError, LookupError):
    """No job, schedule or project by that id or name."""


class IllegalTransition(SwitchboardError):
    """A job state change the state machine does not allow."""

    def __init__(self, job_id: int, from_state: JobState, to_state: JobState) -> None:
        super().__init__(f"job {job_id}: illegal transition {from_state.value} -> {to_state.value}")
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state


class UnparseableReview(SwitchboardError, ValueError):
    """The reviewer's answer holds no valid verdict. The message says what was wrong."""


class WorkspaceError(SwitchboardError, ValueError):
    """A path would leave its job folder, or a job id or file name is not acceptable."""


class StoreError(SwitchboardError):
    """The database cannot be opened or written (corrupt file, full disk, permissions)."""


class LostDatabase(StoreError):
    """The database file is missing or empty (no tables) although the data folder shows earlier use: starting
    would begin a new empty database and silently lose the jobs it held."""


class EngineRunning(StoreError):
    """Another engine holds this data folder's engine lease and is alive (``engine/store/lease.py``)."""


class Busy(SwitchboardError):
    """Another connection holds the write lock; the transaction did not start (nothing was written)."""


class LeaseLost(SwitchboardError):
    """The worker no longer owns the job (lease expired and swept, or the job was cancelled)."""


class GateRefused(SwitchboardError):
    """The database refused to mark a reviewed job done without a passing review by another family."""


class AlreadyRunning(SwitchboardError):
    """Another switchboard process holds the data folder's engine lock."""


class SandboxUnavailable(SwitchboardError):
    """``sandbox = "bwrap"`` is configured but bubblewrap is missing or cannot create a sandbox here."""


class ChannelRefused(SwitchboardError):
    """The Telegram channel will not start with this configuration (the message says why)."""


# What an operator command may raise that means "not like that" rather than "something broke": the command
# surfaces (Telegram commands and buttons, the console, the CLI) answer these with ``describe_error``.
OPERATOR_ERRORS: tuple[type[Exception], ...] = (
    NotFound, IllegalTransition, GateRefused, InvalidJob, WorkspaceError, ValueError, KeyError,
)


def _message(exc: BaseException) -> str:
    # A KeyError's str() is the repr of its key ("'name'"); its first argument is what was meant.
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def _transition(exc: IllegalTransition) -> str:
    return f"job #{exc.job_id} is {exc.from_state.value} and cannot become {exc.to_state.value}"


# The one mapping from an error to its operator-facing line; the first matching class wins. Errors raised on
# purpose carry a message written for a person, so most entries pass it through.
_DESCRIPTIONS: tuple[tuple[type[BaseException], Callable[[Any], str]], ...] = (
    (IllegalTransition, _transition),
    (ConfigError, lambda exc: f"configuration error: {_message(exc)}"),
    (Busy, lambda exc: f"the database is busy, try again ({_message(exc)})"),
    (LeaseLost, lambda exc: f"the job moved on while this ran ({_message(exc)})"),
    (MissingPlaceholder, str),  # its own str() names the template and the placeholder
    (SwitchboardError, _message),
    (ValueError, _message),
    (LookupError, _message),  # KeyError and prompts.UnknownPrompt included
)
# The memory leaves of the tree, known by their package: importing ``memory`` here would load the vector store.
_LEAF_PACKAGES = ("memory",)


def describe_error(exc: BaseException) -> str:
    """One line for the operator (phone or console) saying what went wrong; never a traceback.

    Errors Switchboard raises on purpose carry a message written for a person; anything else is named by its
    type so an unexpected crash is recognisable as one."""
    for cls, describe in _DESCRIPTIONS:
        if isinstance(exc, cls):
            return describe(exc)
    if type(exc).__module__.partition(".")[0] in _LEAF_PACKAGES:
        return _message(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
