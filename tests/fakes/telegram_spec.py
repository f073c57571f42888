"""Check JSON objects against the Telegram Bot API specification.

The spec is `tests/fixtures/telegram-bot-api/api.json` (the Bot API as machine-readable JSON, MIT licence, see
`tests/fixtures/README.md`). With it, `validate` checks an object strictly:

- every required field is present and no unknown field appears;
- primitives have the right JSON type (`Integer` is an int and not a bool, `Float` accepts ints, ...);
- `Array of X` (nested to any depth), unions `X or Y` and abstract types with subtypes (`MessageOrigin`,
  `ChatMember`, `MaybeInaccessibleMessage`, ...) are followed; a subtype whose description says
  `always "x"` is selected by that discriminator;
- dates (`date` and `*_date` Integer fields) are Unix seconds, not milliseconds; `Message.date` is positive
  and `InaccessibleMessage.date` is 0.

Given a path where no file is, a weaker built-in check is used instead (`TelegramSpec.from_file` is False): a few
core types (User, Chat, Message, MessageEntity, CallbackQuery, Update, ...) with their required fields and the
types of the fields listed here; unknown fields are then tolerated and unknown types are not checked.

Every failure raises `SpecViolation` (an AssertionError) naming the path of the offending value.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SPEC_PATH",
    "SpecViolation",
    "TelegramSpec",
    "default_spec",
    "validate",
    "validate_method_result",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC_PATH = _REPO_ROOT / "tests" / "fixtures" / "telegram-bot-api" / "api.json"

_PRIMITIVES = frozenset({"Integer", "String", "Boolean", "Float"})
_ARRAY_PREFIX = "Array of "
_ALWAYS_RE = re.compile(r'always "([^"]+)"')
# A date in seconds stays below this until the year 5138; a date in milliseconds is above it.
_MAX_DATE_S = 10**11
_MAX_INTEGER = 2**63


class SpecViolation(AssertionError):
    """An object does not match the Telegram Bot API specification."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    types: tuple[str, ...]
    required: bool
    description: str = ""


@dataclass(frozen=True)
class TypeSpec:
    name: str
    fields: tuple[FieldSpec, ...] = ()
    subtypes: tuple[str, ...] = ()
    has_fields: bool = True

    @functools.cached_property
    def by_name(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    @functools.cached_property
    def discriminator(self) -> tuple[str, str] | None:
        """(field, constant) when a required String field is documented as `always "x"`."""
        for f in self.fields:
            if f.required and f.types == ("String",):
                match = _ALWAYS_RE.search(f.description)
                if match:
                    return f.name, match.group(1)
        return None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: tuple[FieldSpec, ...]
    returns: tuple[str, ...]


def _field(raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        name=raw["name"],
        types=tuple(raw["types"]),
        required=bool(raw.get("required", False)),
        description=raw.get("description", ""),
    )


class TelegramSpec:
    """The Bot API types and methods, loaded from api.json or from the built-in fallback."""

    def __init__(self, data: Mapping[str, Any], *, from_file: bool) -> None:
        self.from_file = from_file
        self.version: str = data.get("version", "built-in subset")
        self.types: dict[str, TypeSpec] = {
            name: TypeSpec(
                name=name,
                fields=tuple(_field(f) for f in raw.get("fields", [])),
                subtypes=tuple(raw.get("subtypes", [])),
                has_fields="fields" in raw,
            )
            for name, raw in data["types"].items()
        }
        self.methods: dict[str, MethodSpec] = {
            name: MethodSpec(
                name=name,
                params=tuple(_field(f) for f in raw.get("fields", [])),
                returns=tuple(raw["returns"]),
            )
            for name, raw in data["methods"].items()
        }
        self._methods_lower = {name.lower(): spec for name, spec in self.methods.items()}

    @classmethod
    def load(cls, path: Path | str | None = None) -> TelegramSpec:
        """Load api.json from `path` (default: the copy in tests/fixtures); fall back when absent."""
        spec_path = Path(path) if path is not None else DEFAULT_SPEC_PATH
        if spec_path.is_file():
            return cls(json.loads(spec_path.read_text(encoding="utf-8")), from_file=True)
        return cls(_FALLBACK, from_file=False)

    def method(self, name: str) -> MethodSpec | None:
        """The method's spec; Telegram matches method names case-insensitively."""
        return self._methods_lower.get(name.lower())

    # -- validation -------------------------------------------------------------------------------------

    def validate(self, type_name: str, obj: Any) -> None:
        """Raise SpecViolation unless `obj` is a valid `type_name` (a type expression such as "Array of X")."""
        self._check((type_name,), obj, type_name)

    def validate_method_result(self, method: str, result: Any) -> None:
        """Raise SpecViolation unless `result` is what `method` returns according to the spec."""
        spec = self.method(method)
        if spec is None:
            if self.from_file:
                raise SpecViolation(f"{method}: no such method in Bot API {self.version}")
            return
        self._check(spec.returns, result, f"{spec.name}()")

    def _check(self, alternatives: tuple[str, ...], value: Any, path: str) -> None:
        if len(alternatives) == 1:
            self._check_one(alternatives[0], value, path)
            return
        errors: list[str] = []
        for alternative in alternatives:
            try:
                self._check_one(alternative, value, path)
            except SpecViolation as exc:
                errors.append(f"as {alternative}: {exc}")
            else:
                return
        raise SpecViolation(f"{path}: matches none of {' or '.join(alternatives)} ({'; '.join(errors)})")

    def _check_one(self, type_expr: str, value: Any, path: str) -> None:
        if type_expr.startswith(_ARRAY_PREFIX):
            if not isinstance(value, list):
                raise SpecViolation(f"{path}: expected {type_expr}, got {type(value).__name__}")
            inner = type_expr[len(_ARRAY_PREFIX) :]
            for index, item in enumerate(value):
                self._check_one(inner, item, f"{path}[{index}]")
            return
        if type_expr in _PRIMITIVES:
            _check_primitive(type_expr, value, path)
            return
        spec = self.types.get(type_expr)
        if spec is None:
            if self.from_file:
                raise SpecViolation(f"{path}: unknown type {type_expr}")
            if not isinstance(value, dict):
                raise SpecViolation(f"{path}: expected object {type_expr}, got {type(value).__name__}")
            return
        if spec.subtypes and not spec.has_fields:
            self._check_subtypes(spec, value, path)
            return
        self._check_object(spec, value, path)

    def _check_subtypes(self, spec: TypeSpec, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for subtype in spec.subtypes:
                sub = self.types.get(subtype)
                if sub is not None and sub.discriminator is not None:
                    field, constant = sub.discriminator
                    if value.get(field) == constant:
                        self._check_object(sub, value, path)
                        return
        self._check(spec.subtypes, value, path)

    def _check_object(self, spec: TypeSpec, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SpecViolation(f"{path}: expected object {spec.name}, got {type(value).__name__}")
        missing = [f.name for f in spec.fields if f.required and f.name not in value]
        if missing:
            raise SpecViolation(f"{path}: {spec.name} lacks required field(s) {', '.join(missing)}")
        if self.from_file:
            unknown = sorted(set(value) - set(spec.by_name))
            if unknown:
                raise SpecViolation(f"{path}: unknown field(s) {', '.join(unknown)} in {spec.name}")
        for name, item in value.items():
            field = spec.by_name.get(name)
            if field is None:
                continue
            item_path = f"{path}.{name}"
            self._check(field.types, item, item_path)
            _check_date(spec.name, field, item, item_path)
        discriminator = spec.discriminator
        if discriminator is not None and value.get(discriminator[0]) != discriminator[1]:
            field, constant = discriminator
            raise SpecViolation(f"{path}.{field}: must be {constant!r} in {spec.name}, got {value.get(field)!r}")


def _check_primitive(type_name: str, value: Any, path: str) -> None:
    if type_name == "Boolean":
        ok = isinstance(value, bool)
    elif type_name == "Integer":
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_INTEGER
    elif type_name == "Float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise SpecViolation(f"{path}: expected {type_name}, got {type(value).__name__} {value!r:.60}")


def _check_date(type_name: str, field: FieldSpec, value: Any, path: str) -> None:
    is_date = field.name == "date" or field.name.endswith("_date")
    if not is_date or "Integer" not in field.types or not isinstance(value, int) or isinstance(value, bool):
        return
    if value >= _MAX_DATE_S:
        raise SpecViolation(f"{path}: {value} looks like milliseconds; Telegram dates are Unix seconds")
    if value < 0:
        raise SpecViolation(f"{path}: negative date {value}")
    if type_name == "Message" and field.name == "date" and value == 0:
        raise SpecViolation(f"{path}: Message.date must be positive (0 marks an InaccessibleMessage)")
    if type_name == "InaccessibleMessage" and field.name == "date" and value != 0:
        raise SpecViolation(f"{path}: InaccessibleMessage.date is always 0")


@functools.cache
def default_spec() -> TelegramSpec:
    """The spec loaded once from the default path (or the built-in fallback)."""
    return TelegramSpec.load()


def validate(type_name: str, obj: Any) -> None:
    """Validate `obj` as `type_name` against the default spec; raise SpecViolation when it does not match."""
    default_spec().validate(type_name, obj)


def validate_method_result(method: str, result: Any) -> None:
    """Validate `result` as the return value of `method` against the default spec."""
    default_spec().validate_method_result(method, result)


# -- the built-in fallback: a few core types, lenient about fields it does not list ----------------------------


def _f(name: str, types: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "types": types.split(" or "), "required": required}


def _t(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"fields": list(fields)}


_FALLBACK: dict[str, Any] = {
    "version": "built-in subset",
    "types": {
        "User": _t(
            _f("id", "Integer", True), _f("is_bot", "Boolean", True), _f("first_name", "String", True),
            _f("last_name", "String"), _f("username", "String"), _f("language_code", "String"),
            _f("can_join_groups", "Boolean"), _f("can_read_all_group_messages", "Boolean"),
            _f("supports_inline_queries", "Boolean"),
        ),
        "Chat": _t(
            _f("id", "Integer", True), _f("type", "String", True), _f("title", "String"),
            _f("username", "String"), _f("first_name", "String"), _f("last_name", "String"),
        ),
        "MessageEntity": _t(
            _f("type", "String", True), _f("offset", "Integer", True), _f("length", "Integer", True),
            _f("url", "String"), _f("user", "User"), _f("language", "String"),
        ),
        "PhotoSize": _t(
            _f("file_id", "String", True), _f("file_unique_id", "String", True), _f("width", "Integer", True),
            _f("height", "Integer", True), _f("file_size", "Integer"),
        ),
        "Document": _t(
            _f("file_id", "String", True), _f("file_unique_id", "String", True), _f("file_name", "String"),
            _f("mime_type", "String"), _f("file_size", "Integer"),
        ),
        "File": _t(
            _f("file_id", "String", True), _f("file_unique_id", "String", True), _f("file_size", "Integer"),
            _f("file_path", "String"),
        ),
        "InlineKeyboardButton": _t(_f("text", "String", True), _f("callback_data", "String"), _f("url", "String")),
        "InlineKeyboardMarkup": _t(_f("inline_keyboard", "Array of Array of InlineKeyboardButton", True)),
        "Message": _t(
            _f("message_id", "Integer", True), _f("from", "User"), _f("date", "Integer", True),
            _f("chat", "Chat", True), _f("edit_date", "Integer"), _f("text", "String"),
            _f("entities", "Array of MessageEntity"), _f("caption", "String"),
            _f("caption_entities", "Array of MessageEntity"), _f("document", "Document"),
            _f("photo", "Array of PhotoSize"), _f("reply_markup", "InlineKeyboardMarkup"),
        ),
        "InaccessibleMessage": _t(
            _f("chat", "Chat", True), _f("message_id", "Integer", True), _f("date", "Integer", True)
        ),
        "MaybeInaccessibleMessage": {"subtypes": ["Message", "InaccessibleMessage"]},
        "CallbackQuery": _t(
            _f("id", "String", True), _f("from", "User", True), _f("message", "MaybeInaccessibleMessage"),
            _f("inline_message_id", "String"), _f("chat_instance", "String", True), _f("data", "String"),
        ),
        "Update": _t(
            _f("update_id", "Integer", True), _f("message", "Message"), _f("edited_message", "Message"),
            _f("callback_query", "CallbackQuery"),
        ),
        "BotCommand": _t(_f("command", "String", True), _f("description", "String", True)),
        "WebhookInfo": _t(
            _f("url", "String", True), _f("has_custom_certificate", "Boolean", True),
            _f("pending_update_count", "Integer", True), _f("allowed_updates", "Array of String"),
        ),
        "ResponseParameters": _t(_f("migrate_to_chat_id", "Integer"), _f("retry_after", "Integer")),
    },
    "methods": {
        "getMe": {"returns": ["User"]},
        "getUpdates": {"returns": ["Array of Update"]},
        "sendMessage": {"returns": ["Message"]},
        "sendDocument": {"returns": ["Message"]},
        "sendPhoto": {"returns": ["Message"]},
        "editMessageText": {"returns": ["Message", "Boolean"]},
        "editMessageReplyMarkup": {"returns": ["Message", "Boolean"]},
        "editMessageCaption": {"returns": ["Message", "Boolean"]},
        "deleteMessage": {"returns": ["Boolean"]},
        "sendChatAction": {"returns": ["Boolean"]},
        "answerCallbackQuery": {"returns": ["Boolean"]},
        "setMyCommands": {"returns": ["Boolean"]},
        "getMyCommands": {"returns": ["Array of BotCommand"]},
        "deleteMyCommands": {"returns": ["Boolean"]},
        "deleteWebhook": {"returns": ["Boolean"]},
        "setWebhook": {"returns": ["Boolean"]},
        "getWebhookInfo": {"returns": ["WebhookInfo"]},
        "getFile": {"returns": ["File"]},
        "close": {"returns": ["Boolean"]},
        "logOut": {"returns": ["Boolean"]},
    },
}
