"""Settings: one object, built once at start, passed to every constructor.

Sources, lowest precedence first: built-in defaults, ``switchboard.toml`` (``--config``,
``$SWITCHBOARD_CONFIG`` or the working directory), then ``SWITCHBOARD_*`` environment variables
(nested keys with ``__``: ``SWITCHBOARD_ENGINE__MAX_SLOTS=10``). Secrets are never in the file: a backend
names the environment variable that holds its key (``api_key_env``).

A malformed or contradictory configuration raises ``ConfigError`` with one message naming the key. Every table
forbids keys it does not know, and an unknown ``SWITCHBOARD_*`` variable is refused the same way, both with a
"did you mean" when a known key is close; times, time zones and ranges are checked here, so ``doctor`` and
``run`` refuse the same things with the same line.

The environment is read here rather than by pydantic-settings: beyond pydantic itself that package cost each
CLI command 0.03-0.05 s of imports before its first line of work (its sources, dotenv, its CLI parser); the
rules it applied are the few kept below (``__`` nesting, JSON for tables and lists, the environment over the
file). ``Settings(...)`` built directly (tests, benches) reads no environment.
"""


import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.errors import ConfigError
from engine.schedule_times import parse_hhmm, zone
from memory.settings import MemorySettings

JOB_TYPES: tuple[str, ...] = (
    "chat",
    "coding",
    "research",
    "writing",
    "academic",
    "review",
    "triage",
    "analysis",
    "maintenance",
    "deploy",
    "engagement",
    "media",
)
BackendKind = Literal["claude_cli", "codex_cli", "openai", "anthropic", "sim"]
BOT_TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
_FILE_SECRETS = ("bot_token", "webhook_secret")
# SWITCHBOARD_* variables read on purpose outside the Settings fields (the config file's path, binaries, detection).
ENV_PREFIX = "SWITCHBOARD_"
OTHER_ENV_NAMES = frozenset({"SWITCHBOARD_CONFIG", "SWITCHBOARD_OLLAMA_MODEL"})


def _time_of_day(value: str) -> str:
    parse_hhmm(value)
    return value


# "HH:MM", checked at load (a wrong one is refused with the key's name, by doctor and run alike).
TimeOfDay = Annotated[str, AfterValidator(_time_of_day)]


class _Strict(BaseModel):
    """A table of switchboard.toml: a key it does not know is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TelegramSettings(_Strict):
    operator_ids: list[int] = []
    # Only private chats with an operator are served; a group or channel is served only when named here.
    allowed_chats: list[int] = []
    api_base_url: str = "https://api.telegram.org"
    # Long polling unless a webhook URL is set; a webhook requires a secret token (from the environment).
    webhook_url: str | None = None
    webhook_secret_env: str = "TELEGRAM_WEBHOOK_SECRET"
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    progress_edit_interval_s: float = 20.0
    # Secrets, never in the file: ``Settings`` reads them from $TELEGRAM_BOT_TOKEN and $webhook_secret_env.
    # As SecretStr they print as '**********' in any repr, log line or dump.
    bot_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None


class EngineSettings(_Strict):
    max_slots: int = Field(20, ge=1)
    reserved_operator_slots: int = Field(1, ge=0)
    token_budget_5min: int = Field(2_000_000, ge=1)
    backpressure_queue_depth: int = Field(20, ge=1)
    backpressure_token_pct: float = Field(0.8, gt=0, le=1)
    daily_budget_usd: float = Field(10.0, ge=0)
    lease_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(15.0, gt=0)
    tick_s: float = Field(10.0, gt=0)
    cross_process_poll_s: float = Field(0.05, gt=0)
    sweep_interval_s: float = Field(30.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    max_attempts: int = Field(3, ge=1)
    circuit_breaker_failures: int = Field(3, ge=1)
    circuit_breaker_cooldown_s: float = Field(300.0, gt=0)
    # The CLI workers' boundary (engine/sandbox.py): bubblewrap when it works here ("auto"), required ("bwrap"),
    # or the environment allow-list alone ("off").
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    # Projects on the operator's folders (engine/worktrees.py): the time limit of the engine's own test run, and
    # how long a finished job's worktree is kept before the pulse removes it (its branch stays).
    test_timeout_s: float = Field(600.0, gt=0, le=86_400)
    worktree_keep_hours: float = Field(72.0, ge=0)

    @model_validator(mode="after")
    def _reserved_below_max(self) -> Self:
        if self.reserved_operator_slots >= self.max_slots:
            raise ValueError(
                f"engine.reserved_operator_slots ({self.reserved_operator_slots}) must be smaller than "
                f"engine.max_slots ({self.max_slots})"
            )
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("engine.heartbeat_s must be smaller than engine.lease_s")
        return self


class SimProfile(_Strict):
    """Behaviour of a simulated backend. Deterministic for a given seed."""

    latency_ms: float = 200.0
    tokens_in: int = 1200
    tokens_out: int = 400
    failure_rate: float = Field(0.0, ge=0, le=1)
    rate_limit_rate: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = 60.0
    review_score: float = Field(8.0, ge=0, le=10)
    seed: int = 0


class BackendConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: BackendKind
    model: str = ""
    family: str
    tier: int = Field(2, ge=1, le=3)
    base_url: str | None = None
    api_key_env: str | None = None
    binary: str | None = None
    extra_args: list[str] = []
    # Variables a CLI worker gets besides its allow-list (engine/sandbox.py); never another's secret.
    env_passthrough: list[str] = []
    price_in_per_mtok: float = Field(0.0, ge=0)
    price_out_per_mtok: float = Field(0.0, ge=0)
    price_cache_read_per_mtok: float = Field(0.0, ge=0)
    price_cache_write_per_mtok: float = Field(0.0, ge=0)
    # Subscription backends (a logged-in Claude Code, a Codex plan) cost nothing per call but have usage windows.
    subscription: bool = False
    context_window: int = Field(200_000, ge=1)
    max_concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(1800.0, gt=0)
    enabled: bool = True
    sim: SimProfile = Field(default_factory=SimProfile)

    @field_validator("env_passthrough")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    @property
    def pay_per_token(self) -> bool:
        """Its calls cost money and count toward the daily cap: priced in the config, or a ``claude_cli`` that is
        not a subscription (the CLI prices each run itself, ``total_cost_usd``)."""
        if self.subscription or self.simulated:
            return False
        return self.price_in_per_mtok > 0 or self.price_out_per_mtok > 0 or self.kind == "claude_cli"

    def api_key(self) -> SecretStr | None:
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        return SecretStr(value) if value else None


class JobTypeConfig(_Strict):
    tier: int = Field(2, ge=1, le=3)
    review: bool = False
    rubric: str = "default"
    threshold: float = Field(7.0, ge=0, le=10)
    max_revisions: int = Field(2, ge=0)
    require_test_evidence: bool = False
    # Work on files (a worktree, a folder): routed only to backends that can act on files (the CLI workers),
    # unless it accepts a patch: then an HTTP backend may answer with a unified diff the engine applies.
    needs_workspace: bool = False
    accept_patch: bool = False
    max_turns: int | None = None
    permission_mode: str | None = "acceptEdits"
    allowed_tools: list[str] = []
    budget_usd: float | None = None
    timeout_s: float = Field(1800.0, gt=0)


DEFAULT_JOB_TYPES: dict[str, JobTypeConfig] = {
    "chat": JobTypeConfig(tier=2, timeout_s=300),
    "coding": JobTypeConfig(tier=3, review=True, rubric="coding", require_test_evidence=True, needs_workspace=True),
    "research": JobTypeConfig(tier=3, review=True),
    "writing": JobTypeConfig(tier=2, review=True),
    "academic": JobTypeConfig(tier=3, review=True),
    "review": JobTypeConfig(tier=3, timeout_s=600),
    "triage": JobTypeConfig(tier=1, timeout_s=300),
    "analysis": JobTypeConfig(tier=2),
    "maintenance": JobTypeConfig(tier=1),
    "deploy": JobTypeConfig(tier=3, review=True, needs_workspace=True),
    "engagement": JobTypeConfig(tier=2),
    "media": JobTypeConfig(tier=2),
}


def default_sim_backends() -> list[BackendConfig]:
    """A simulated mix mirroring a real deployment: several families across all three tiers."""
    spec = [
        ("sim-opus", "anthropic", 3, 15.0, 75.0),
        ("sim-gpt", "openai", 3, 1.25, 10.0),
        ("sim-deepseek", "deepseek", 3, 0.55, 2.19),
        ("sim-sonnet", "anthropic", 2, 3.0, 15.0),
        ("sim-kimi", "moonshot", 2, 0.6, 2.5),
        ("sim-haiku", "anthropic", 1, 1.0, 5.0),
        ("sim-gemini-flash", "google", 1, 0.1, 0.4),
    ]
    return [
        BackendConfig(
            name=name,
            kind="sim",
            model=name,
            family=family,
            tier=tier,
            price_in_per_mtok=p_in,
            price_out_per_mtok=p_out,
            max_concurrency=8,
        )
        for name, family, tier, p_in, p_out in spec
    ]


class GateSettings(_Strict):
    """What the quality gate does when no reviewer of another model family exists (a one-family setup):
    ``operator`` hands the job to the operator after ``no_other_family_grace_s`` (the maker's result, Approve /
    Revise / Discard); ``same_family_other_model`` lets another model of the maker's family review (the operator's
    standing approval, said in the notice); ``wait`` waits for such a reviewer to be configured."""

    when_no_other_family: Literal["operator", "same_family_other_model", "wait"] = "operator"
    no_other_family_grace_s: float = Field(30.0, ge=0)


class PulseSettings(_Strict):
    interval_min: float = Field(30.0, gt=0)
    digest_time: TimeOfDay = "07:00"
    quiet_hours: str | None = None
    timezone: str = "UTC"
    project_idle_hours: float = Field(12.0, gt=0)
    stale_job_hours: float = Field(6.0, gt=0)
    credential_warn_hours: float = Field(24.0, gt=0)

    @field_validator("quiet_hours")
    @classmethod
    def _time_range(cls, value: str | None) -> str | None:
        if value is not None:
            start, dash, end = value.partition("-")
            if not dash:
                raise ValueError(f"not a range of times: {value!r} (HH:MM-HH:MM, e.g. 22:00-07:00)")
            parse_hhmm(start)
            parse_hhmm(end)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value


class QuotaSettings(_Strict):
    """Quota-aware routing of subscription windows (engine/quota.py, the window rules in engine/policy.py)."""

    # Off: subscription backends are used until a window runs out, then paused until its reset (as before).
    enabled: bool = True
    # Past this share of a window (or when the CLI warns, or when the burn rate says it runs out before its
    # reset), background and low-priority work moves to another backend or waits for the reset.
    warn_share: float = Field(0.9, gt=0, le=1)
    # A job is not started on a window unless this share would still be left after a typical run of its type.
    headroom_share: float = Field(0.05, ge=0, lt=1)
    # A tiny request at warm_at (pulse.timezone) starts a fresh five-hour window, lined up with the day.
    warm_windows: bool = False
    warm_at: TimeOfDay = "07:00"


class PersonaSettings(_Strict):
    """The persona's turn: how much live state it sees, and which of its actions wait for the operator's button."""

    snapshot_tokens: int = Field(1200, ge=100)  # the live snapshot's budget (about 4 characters a token)
    # An enqueue whose estimated cost is above this waits for a button (0: every paid job does).
    confirm_cost_usd: float = Field(1.0, ge=0)
    # A schedule that runs more often than this waits for a button.
    confirm_schedule_below_s: float = Field(3600.0, ge=0)
    # The persona's claude CLI session, resumed turn after turn (a warm prompt cache): a fresh one once it
    # carries this many tokens of context or is this many hours old.
    session_max_tokens: int = Field(100_000, ge=1_000)
    session_max_age_h: float = Field(24.0, gt=0)


class MediaSettings(_Strict):
    """Files the operator sends: documents and photos become jobs with the file in the job's folder."""

    max_file_mb: float = Field(10.0, gt=0, le=20)  # the Bot API serves bots files up to 20 MB
    job_type: str = "analysis"  # the type of the job a document or photo starts (its caption is the request)
    # A local speech-to-text command, the voice note's path appended, printing the text (e.g. a whisper.cpp
    # wrapper). Empty: voice notes are answered with a sentence saying so.
    transcriber: list[str] = []
    transcriber_timeout_s: float = Field(120.0, gt=0)


class Settings(BaseModel):
    """The whole configuration; ``load_settings`` builds it from the file and the ``SWITCHBOARD_*`` variables."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    home: Path = Field(default_factory=lambda: Path("~/.switchboard").expanduser())
    persona_name: str = "Switch"
    # With no [[backends]] configured: look for a logged-in claude, API keys and a local Ollama first.
    detect_backends: bool = True
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    backends: list[BackendConfig] = []
    routing: dict[str, list[str]] = {}
    job_types: dict[str, JobTypeConfig] = {}
    memory: MemorySettings = Field(default_factory=MemorySettings)
    pulse: PulseSettings = Field(default_factory=PulseSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    chat: PersonaSettings = Field(default_factory=PersonaSettings)  # the persona's turns: [chat]
    media: MediaSettings = Field(default_factory=MediaSettings)

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if not self.backends:
            self.backends = default_sim_backends()
        names = [b.name for b in self.backends]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"backends: duplicate name {duplicates[0]!r}")
        merged = dict(DEFAULT_JOB_TYPES)
        merged.update(self.job_types)
        self.job_types = merged
        for job_type, chain in self.routing.items():
            if job_type not in self.job_types:
                guess = _did_you_mean(job_type, self.job_types)
                raise ValueError(f"routing.{job_type}: unknown job type {job_type!r}{guess}")
            for name in chain:
                if name not in names:
                    raise ValueError(f"routing.{job_type}: unknown backend {name!r} (known: {', '.join(names)})")
        self._read_telegram_secrets()
        return self

    def _read_telegram_secrets(self) -> None:
        """The bot token and the webhook secret come from the environment, unless given directly (tests)."""
        telegram = self.telegram
        if telegram.bot_token is None and (token := os.environ.get(BOT_TOKEN_ENV)):
            telegram.bot_token = SecretStr(token)
        if telegram.webhook_secret is None and (secret := os.environ.get(telegram.webhook_secret_env)):
            telegram.webhook_secret = SecretStr(secret)

    @model_validator(mode="after")
    def _passthrough_not_secret(self) -> Self:
        secrets = self.secret_env_names()
        for config in self.backends:
            for name in config.env_passthrough:
                if name in secrets and name != config.api_key_env:
                    raise ValueError(f"backends.{config.name}.env_passthrough: {name} holds another secret "
                                     "(the Telegram token, the webhook secret or another backend's key)")
        return self

    def secret_env_names(self) -> set[str]:
        """The variables holding secrets: the Telegram token and webhook secret, every key a backend or the
        embedder names."""
        names = {BOT_TOKEN_ENV, self.telegram.webhook_secret_env, self.memory.embedder_api_key_env or ""}
        names.update(b.api_key_env for b in self.backends if b.api_key_env)
        return names - {""}

    _detected: bool = PrivateAttr(False)
    _config_path: Path | None = PrivateAttr(None)

    @property
    def config_path(self) -> Path | None:
        """The config file load_settings read, if any: workers never see it."""
        return self._config_path

    @property
    def backends_detected(self) -> bool:
        """True when load_settings detected the backends (nothing was configured)."""
        return self._detected

    @property
    def db_path(self) -> Path:
        return self.home / "switchboard.db"

    @property
    def simulated_only(self) -> bool:
        return all(b.simulated for b in self.backends)

    def backend(self, name: str) -> BackendConfig:
        for config in self.backends:
            if config.name == name:
                return config
        raise KeyError(name)

    def job_type(self, name: str) -> JobTypeConfig:
        return self.job_types.get(name) or JobTypeConfig()

    def chain_for(self, job_type: str) -> list[str]:
        """The ordered fallback chain for a job type: configured, else the tier's default chain."""
        if job_type in self.routing:
            return list(self.routing[job_type])
        tier = self.job_type(job_type).tier
        enabled = [b for b in self.backends if b.enabled]
        # Own tier first, then stronger tiers, then weaker ones as a last resort.
        ordered = sorted(enabled, key=lambda b: (b.tier != tier, b.tier < tier, abs(b.tier - tier)))
        return [b.name for b in ordered]


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("SWITCHBOARD_CONFIG")
    if from_env:
        return Path(from_env)
    local = Path.cwd() / "switchboard.toml"
    return local if local.exists() else None


def load_settings(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate. Raises ConfigError."""
    path = find_config_file(config_path)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    telegram = data.get("telegram")
    for key in _FILE_SECRETS:
        if isinstance(telegram, dict) and key in telegram:
            raise ConfigError(
                f"{path}: telegram.{key}: secrets are never in the file; put it in the environment "
                f"(${BOT_TOKEN_ENV} for the bot token, $TELEGRAM_WEBHOOK_SECRET or telegram.webhook_secret_env)"
            )
    data.update(overrides)
    data = _merge(data, _environment_values(os.environ))  # the environment wins over the file and the caller
    try:
        settings = Settings(**data)
        if settings.detect_backends and not data.get("backends") and settings.simulated_only:
            from engine.detect import detect_backends

            detected = detect_backends()
            if detected:
                settings = Settings(**{**data, "backends": detected})
                settings._detected = True
        settings._config_path = path.resolve() if path is not None else None
        return settings
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, data)) from None


def _describe(exc: ValidationError, path: Path | None, data: dict[str, Any]) -> str:
    where = f"{path}: " if path else ""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if not loc:  # a check across tables: its message names the key
        return f"{where}{first['msg'].removeprefix('Value error, ')}{more}"
    key = _key_path(loc, data)
    if first["type"] == "extra_forbidden":
        table = _model_at(loc[:-1])
        known = list(table.model_fields) if table else []
        return f"{where}unknown setting {key}{_did_you_mean(str(loc[-1]), known)}{more}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}invalid setting {key}: {message}{more}"


def _did_you_mean(word: str, known: Any) -> str:
    close = _closest(word, known)
    return f" (did you mean {close}?)" if close else ""


def _closest(word: str, known: Any) -> str | None:
    import difflib  # only to word a refusal: a good configuration never loads it

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _key_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """``engine.max_slot``; a backend by its name: ``backends[claude].api_key_envv``."""
    text = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            text += f"[{name or part}]"
        else:
            node = node.get(part) if isinstance(node, dict) else None
            text += f".{part}" if text else str(part)
    return text


def _unwrap(annotation: Any) -> Any:
    """The model, list or dict inside ``X | None``."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) not in (list, dict) and len(args) == 1:
        return args[0]
    return annotation


def _step(annotation: Any, part: str | int) -> Any:
    """The type one key below ``annotation`` (a field of a model, an item of a list, a value of a dict)."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field else None
    if get_origin(annotation) in (list, dict):
        return get_args(annotation)[-1]
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    annotation: Any = Settings
    for part in loc:
        annotation = _step(annotation, part)
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the ``SWITCHBOARD_*`` variables give, as nested tables (``ENGINE__MAX_SLOTS`` ->
    ``{"engine": {"max_slots": "10"}}``); a table, list or dict value is JSON. An unknown name or a value that is
    not JSON where JSON is needed raises ConfigError with one line naming the variable."""
    values: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in OTHER_ENV_NAMES or name.endswith("_BIN"):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        annotation: Any = Settings
        for depth, part in enumerate(parts):
            table = _unwrap(annotation)
            if isinstance(table, type) and issubclass(table, BaseModel) and part not in table.model_fields:
                closest = _closest(part, table.model_fields)
                close = [closest] if closest else []
                meant = ENV_PREFIX + "__".join([*parts[:depth], *close, *parts[depth + 1:]]).upper()
                guess = f" (did you mean {meant}?)" if close else ""
                raise ConfigError(f"environment variable {name}: no such setting {'.'.join(parts[:depth + 1])}{guess}")
            annotation = _step(annotation, part)
            if annotation is None:
                raise ConfigError(f"environment variable {name}: no such setting {'.'.join(parts[:depth + 1])}")
        value: Any = environ[name]
        if _is_structured(annotation):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"environment variable {name}: not valid JSON for {'.'.join(parts)}") from None
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return values


def _is_structured(annotation: Any) -> bool:
    """A table, list or dict: given in the environment as JSON."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (list, dict, set, tuple):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, tables merged key by key (an environment variable overrides one key of the
    file's table, not the whole table)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
