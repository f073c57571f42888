"""A fake Telegram Bot API for tests: one state, two adapters.

    async with FakeTelegram() as fake:
        bot = Bot(fake.token, request=fake.request(), get_updates_request=fake.request())   # in-process
        bot = Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)     # real HTTP
        fake.operator_sends_text(user_id=42, chat_id=42, text="hello")
        [reply] = await fake.wait_for_messages(chat_id=42, count=1)

Both adapters end in `FakeTelegram.handle`: the in-process `FakeRequest` (a `telegram.request.BaseRequest`)
hands over the very form fields and files PTB would put on the wire, and the HTTP server on 127.0.0.1
(ephemeral port, `/bot<token>/<method>` and `/file/bot<token>/<path>`) parses them off the wire.

Telegram's rules are enforced with Telegram's error texts: 4096 characters after entity parsing (counted in
UTF-16 code units, the stricter reading), 1024 for captions, HTML and MarkdownV2 parse errors, "message is not
modified", callback data of 1-64 bytes, a wrong token (401), unknown methods (404), a long-polled getUpdates
that honours `offset`/`limit`/`timeout`/`allowed_updates` and answers 409 when a second poller or a webhook
interferes, and scripted errors such as 429 flood waits. Every response body and every update is validated
against the Bot API spec (`tests.fakes.telegram_spec`); a malformed answer of the fake itself raises
`FakeTelegramBug`, is recorded and is raised again by `aclose()`, so it cannot pass silently.

Not modelled: webhook delivery (setWebhook only records the URL), inline mode, media groups, legacy Markdown
(accepted as plain text), Telegram's global rate limits (script them with `script_flood_wait`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import re
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from telegram.request import BaseRequest, RequestData

from tests.fakes.telegram_spec import SpecViolation, TelegramSpec, default_spec

__all__ = [
    "BotMessage",
    "ChatAction",
    "Edit",
    "FakeRequest",
    "FakeTelegram",
    "FakeTelegramBug",
    "UploadedFile",
]

JSON = dict[str, Any]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
        "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
    }
)
_DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_MARKUP_KINDS = (
    ("inline_keyboard", "InlineKeyboardMarkup"), ("keyboard", "ReplyKeyboardMarkup"),
    ("remove_keyboard", "ReplyKeyboardRemove"), ("force_reply", "ForceReply"),
)
_TOKEN_RE = re.compile(r"[0-9]+:[A-Za-z0-9_-]{20,}")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_BOT_COMMAND_IN_TEXT = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
# Parameters that are Strings even where their value looks like JSON (used with the fallback spec, too).
_STRING_PARAMS = frozenset(
    {
        "text", "caption", "parse_mode", "action", "callback_query_id", "url", "secret_token", "language_code",
        "inline_message_id", "business_connection_id", "message_effect_id", "ip_address", "file_id",
        "document", "photo", "thumbnail",
    }
)


class FakeTelegramBug(AssertionError):
    """The fake itself produced something Telegram never would (a response or update failing the spec)."""


class _ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


# -- records the tests read ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    filename: str | None
    content: bytes
    mime_type: str | None = None


@dataclass
class BotMessage:
    """A message the bot sent, as Telegram stored it at send time."""

    chat_id: int
    message_id: int
    kind: Literal["text", "document", "photo"]
    text: str  # text or caption after entity parsing ("" for media without caption)
    source: str  # text or caption exactly as the bot sent it
    parse_mode: str | None
    entities: list[JSON]
    reply_markup: JSON | None
    message: JSON
    file: UploadedFile | None = None

    @property
    def buttons(self) -> list[JSON]:
        """The inline keyboard buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    @property
    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons if "callback_data" in b]


@dataclass(frozen=True)
class Edit:
    chat_id: int
    message_id: int
    method: str
    text: str | None  # new text after entity parsing; None for editMessageReplyMarkup
    source: str | None
    parse_mode: str | None
    reply_markup: JSON | None
    message: JSON


@dataclass(frozen=True)
class ChatAction:
    chat_id: int
    action: str


@dataclass(frozen=True)
class Call:
    method: str
    params: JSON
    status: int


@dataclass
class _Chat:
    chat: JSON
    next_message_id: int = 1
    messages: dict[int, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    upload: UploadedFile


# -- text: entity parsing and lengths -----------------------------------------------------------------------


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _utf16_units(byte: int) -> int:
    """UTF-16 units contributed by a UTF-8 byte (counted at the first byte of each character)."""
    if byte & 0xC0 == 0x80:
        return 0
    return 2 if byte >= 0xF0 else 1


_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_ENTITY_RE = re.compile(rb"&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|lt|gt|amp|quot);")
_HTML_SIMPLE = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "code": "code", "pre": "pre",
}
_HTML_TAGS = frozenset({*_HTML_SIMPLE, "a", "span", "tg-emoji", "blockquote", "tg-time"})


def _html_entity_at(raw: bytes, i: int) -> tuple[str, int] | None:
    match = _HTML_ENTITY_RE.match(raw, i)
    if match is None:
        return None
    name = match.group(1).decode()
    if name.startswith("#x"):
        char = chr(int(name[2:], 16)) if int(name[2:], 16) <= 0x10FFFF else None
    elif name.startswith("#"):
        char = chr(int(name[1:])) if int(name[1:]) <= 0x10FFFF else None
    else:
        char = _HTML_ENTITIES[name]
    return (char, match.end()) if char else None


def parse_html(text: str) -> tuple[str, list[JSON]]:
    """Telegram's HTML parse mode: (plain text, entities), or _ApiError with Telegram's parse error."""
    raw = text.encode("utf-8") + b"\0"
    out = bytearray()
    offset = 0  # in UTF-16 units
    stack: list[tuple[str, dict[str, str], int]] = []
    entities: list[JSON] = []
    i = 0
    end = len(raw) - 1
    while i < end:
        byte = raw[i]
        if byte == ord("&"):
            decoded = _html_entity_at(raw, i)
            if decoded is not None:
                char, i = decoded
                out += char.encode()
                offset += utf16_len(char)
                continue
        if byte != ord("<"):
            out.append(byte)
            offset += _utf16_units(byte)
            i += 1
            continue
        begin = i
        i += 1
        if raw[i] != ord("/"):
            i, name, attributes = _html_start_tag(raw, begin)
            stack.append((name, attributes, offset))
            continue
        if not stack:
            raise _html_error(f"Unexpected end tag at byte offset {begin}")
        while raw[i] not in b" \t\r\n>\0":
            i += 1
        end_name = raw[begin + 2 : i].decode("utf-8", "replace").lower()
        while raw[i] in b" \t\r\n":
            i += 1
        if raw[i] != ord(">"):
            raise _html_error(f"Unclosed end tag at byte offset {begin}")
        i += 1
        name, attributes, start = stack.pop()
        if end_name and end_name != name:
            raise _html_error(
                f'Unmatched end tag at byte offset {begin}, expected "</{name}>", found "</{end_name}>"'
            )
        if offset > start:
            _add_html_entity(entities, stack, name, attributes, start, offset - start)
    if stack:
        raise _html_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return out.decode("utf-8", "replace"), entities


def _html_error(message: str) -> _ApiError:
    return _bad(f"can't parse entities: {message}")


def _html_start_tag(raw: bytes, begin: int) -> tuple[int, str, dict[str, str]]:
    """Parse `<name attr="v" ...>` starting at `begin`; return (index after '>', name, attributes)."""
    i = begin + 1
    while raw[i] not in b" \t\r\n>\0":
        i += 1
    if raw[i] == 0:
        raise _html_error(f"Unclosed start tag at byte offset {begin}")
    name = raw[begin + 1 : i].decode("utf-8", "replace").lower()
    if name not in _HTML_TAGS:
        raise _html_error(f'Unsupported start tag "{name}" at byte offset {begin}')
    attributes: dict[str, str] = {}
    while raw[i] != ord(">"):
        while raw[i] in b" \t\r\n":
            i += 1
        if raw[i] == ord(">"):
            break
        if raw[i] == 0:
            raise _html_error(f"Unclosed start tag at byte offset {begin}")
        attr_begin = i
        while raw[i] not in b" \t\r\n=>\0":
            i += 1
        attr_name = raw[attr_begin:i].decode("utf-8", "replace").lower()
        while raw[i] in b" \t\r\n":
            i += 1
        if raw[i] != ord("="):
            if name == "blockquote" and attr_name == "expandable":
                attributes["expandable"] = ""
                continue
            raise _html_error(
                f'Expected equal sign in declaration of an attribute of the tag "{name}" at byte offset {begin}'
            )
        i += 1
        while raw[i] in b" \t\r\n":
            i += 1
        i, value = _html_attribute_value(raw, i, name, begin)
        attributes[attr_name] = value
    if name == "span" and attributes.get("class") != "tg-spoiler":
        raise _html_error(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
    return i + 1, name, attributes


def _html_attribute_value(raw: bytes, i: int, tag: str, begin: int) -> tuple[int, str]:
    if raw[i] == 0:
        raise _html_error(f'Unclosed start tag "{tag}" at byte offset {begin}')
    if raw[i] not in b"'\"":
        token_begin = i
        while chr(raw[i]).isalnum() or raw[i] in b".-":
            i += 1
        if raw[i] not in b" \t\r\n>":
            raise _html_error(f"Unexpected end of name token at byte offset {token_begin}")
        return i, raw[token_begin:i].decode().lower()
    quote = raw[i]
    i += 1
    value = bytearray()
    while raw[i] != quote and raw[i] != 0:
        decoded = _html_entity_at(raw, i) if raw[i] == ord("&") else None
        if decoded is not None:
            value += decoded[0].encode()
            i = decoded[1]
        else:
            value.append(raw[i])
            i += 1
    if raw[i] == 0:
        raise _html_error(f"Unclosed start tag at byte offset {begin}")
    return i + 1, value.decode("utf-8", "replace")


def _add_html_entity(
    entities: list[JSON], stack: list[tuple[str, dict[str, str], int]], name: str,
    attributes: dict[str, str], offset: int, length: int,
) -> None:
    entity: JSON = {"offset": offset, "length": length}
    if name in ("code", "pre") and attributes.get("class", "").startswith("language-"):
        language = attributes["class"].removeprefix("language-")
        if name == "code" and stack and stack[-1][0] == "pre" and stack[-1][2] == offset:
            stack[-1][1]["class"] = f"language-{language}"
            return
        if name == "pre":
            entity["language"] = language
    if name in _HTML_SIMPLE:
        entity["type"] = _HTML_SIMPLE[name]
    elif name == "span":
        entity["type"] = "spoiler"
    elif name == "blockquote":
        entity["type"] = "expandable_blockquote" if "expandable" in attributes else "blockquote"
    elif name == "a":
        href = attributes.get("href", "")
        if not href:
            return
        user = re.fullmatch(r"tg://user\?id=(\d+)", href)
        if user:
            entity.update(type="text_mention", user={"id": int(user.group(1)), "is_bot": False, "first_name": "?"})
        else:
            entity.update(type="text_link", url=href)
    elif name == "tg-emoji":
        entity.update(type="custom_emoji", custom_emoji_id=attributes.get("emoji-id", "0"))
    else:  # tg-time
        entity.update(type="date_time", unix_time=int(attributes.get("unix", "0") or 0))
    entities.append(entity)


_MD2_RESERVED = "_*[]()~`>#+-=|{}.!"
_MD2_MARKERS = {"*": "Bold", "_": "Italic", "__": "Underline", "~": "Strikethrough", "||": "Spoiler"}
_MD2_TYPES = {"Bold": "bold", "Italic": "italic", "Underline": "underline", "Strikethrough": "strikethrough",
              "Spoiler": "spoiler"}


def parse_markdown_v2(text: str) -> tuple[str, list[JSON]]:
    """A reduced MarkdownV2: escapes, * _ __ ~ || ` ``` and [text](url); Telegram's reserved-character rule."""
    out: list[str] = []
    entities: list[JSON] = []
    stack: list[tuple[str, int, int]] = []  # (entity name, utf16 offset, byte offset of the marker)
    offset = 0
    i = 0
    while i < len(text):
        char = text[i]
        byte_pos = len(text[:i].encode())
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            offset += utf16_len(text[i + 1])
            i += 2
            continue
        if char == "`":
            fence = "```" if text.startswith("```", i) else "`"
            close = text.find(fence, i + len(fence))
            if close < 0:
                raise _html_error(f"Can't find end of {'Pre' if fence == '```' else 'Code'} entity at byte "
                                  f"offset {byte_pos}")
            body = text[i + len(fence) : close].replace("\\`", "`").replace("\\\\", "\\")
            if fence == "```" and "\n" in body:
                body = body.split("\n", 1)[1]
            out.append(body)
            entities.append({"type": "pre" if fence == "```" else "code", "offset": offset,
                             "length": utf16_len(body)})
            offset += utf16_len(body)
            i = close + len(fence)
            continue
        marker = "__" if text.startswith("__", i) else "||" if text.startswith("||", i) else char
        if marker in _MD2_MARKERS:
            name = _MD2_MARKERS[marker]
            if stack and stack[-1][0] == name:
                _, start, _ = stack.pop()
                if offset > start:
                    entities.append({"type": _MD2_TYPES[name], "offset": start, "length": offset - start})
            else:
                stack.append((name, offset, byte_pos))
            i += len(marker)
            continue
        if char == "[":
            stack.append(("TextUrl", offset, byte_pos))
            i += 1
            continue
        if char == "]" and stack and stack[-1][0] == "TextUrl":
            _, start, _ = stack.pop()
            match = re.match(r"\]\(((?:[^)\\]|\\.)*)\)", text[i:])
            if match is None:
                raise _html_error(f"Can't find end of TextUrl entity at byte offset {byte_pos}")
            if offset > start:
                entities.append({"type": "text_link", "offset": start, "length": offset - start,
                                 "url": re.sub(r"\\(.)", r"\1", match.group(1))})
            i += match.end()
            continue
        if char == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1  # blockquote marker; the quote entity itself is not modelled
            continue
        if char in _MD2_RESERVED:
            raise _html_error(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
        out.append(char)
        offset += utf16_len(char)
        i += 1
    if stack:
        name, _, byte_pos = stack[-1]
        raise _html_error(f"Can't find end of {name} entity at byte offset {byte_pos}")
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _strip(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Telegram trims leading and trailing whitespace and shifts or clips entities accordingly."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    left = utf16_len(text[: len(text) - len(text.lstrip())])
    limit = utf16_len(stripped)
    result = []
    for entity in entities:
        start = max(entity["offset"] - left, 0)
        stop = min(entity["offset"] + entity["length"] - left, limit)
        if stop > start:
            result.append({**entity, "offset": start, "length": stop - start})
    return stripped, result


# -- images: enough of PNG, JPEG and GIF to report dimensions -----------------------------------------------


def _image_size(content: bytes) -> tuple[int, int] | None:
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return width, height
    if content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
        return width, height
    if content.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(content):
            if content[i] != 0xFF:
                return None
            marker, length = content[i + 1], struct.unpack(">H", content[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", content[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


# -- waiting -------------------------------------------------------------------------------------------------


class _Signal:
    """Wake every waiter on a state change; `notify` is synchronous so driver methods can stay plain calls."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
        return True


# -- the fake ------------------------------------------------------------------------------------------------


class FakeTelegram:
    """State and rules of a fake Bot API server; see the module docstring."""

    def __init__(
        self,
        token: str = "123456789:AAFakeTokenForTestsOnly_abcdefghijkl",
        *,
        bot_username: str = "switchboard_test_bot",
        spec: TelegramSpec | None = None,
        clock: Callable[[], float] = time.time,
        http: bool = True,
    ) -> None:
        self.token = token
        self.spec = spec or default_spec()
        self._clock = clock
        self._want_http = http
        self._http: _HttpServer | None = None
        self.bot_user: JSON = {
            "id": int(token.split(":", 1)[0]), "is_bot": True, "first_name": "Switchboard",
            "username": bot_username,
        }
        # What the bot did, in order.
        self.sent: list[BotMessage] = []
        self.edits: list[Edit] = []
        self.deletions: list[tuple[int, int]] = []
        self.chat_actions: list[ChatAction] = []
        self.callback_answers: list[JSON] = []
        self.requests: list[Call] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.internal_errors: list[BaseException] = []
        self.webhook: JSON = {}
        # Telegram's side.
        self._users: dict[int, JSON] = {}
        self._chats: dict[int, _Chat] = {}
        self._blocked_by: set[int] = set()
        self._pending: list[JSON] = []
        self._all_updates: list[JSON] = []
        self._delivered_up_to = 0
        self._update_ids = itertools.count(10_000)
        self._callback_ids = itertools.count(1)
        self._open_queries: dict[str, JSON] = {}
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._file_ids = itertools.count(1)
        self._scripted: dict[str, collections.deque[_ApiError]] = collections.defaultdict(collections.deque)
        self._delays: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._changed = _Signal()
        self._handlers: dict[str, Callable[[JSON, dict[str, UploadedFile]], Awaitable[Any]]] = {
            "getme": self._get_me, "getupdates": self._get_updates, "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text, "editmessagereplymarkup": self._edit_reply_markup,
            "deletemessage": self._delete_message, "senddocument": self._send_document,
            "sendphoto": self._send_photo, "sendchataction": self._send_chat_action,
            "answercallbackquery": self._answer_callback_query, "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands, "deletemycommands": self._delete_my_commands,
            "deletewebhook": self._delete_webhook, "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info, "getfile": self._get_file,
            "close": self._true, "logout": self._true,
        }

    # -- lifecycle and adapters ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._want_http:
            await self.start_http()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose(raise_internal_errors=exc_info[0] is None)

    async def start_http(self) -> str:
        """Start the HTTP adapter on 127.0.0.1 (ephemeral port); return its `base_url`."""
        if self._http is None:
            self._http = _HttpServer(self)
            await self._http.start()
        return self.base_url

    async def aclose(self, *, raise_internal_errors: bool = True) -> None:
        """Stop the HTTP adapter; raise FakeTelegramBug if the fake produced anything invalid meanwhile."""
        self._changed.notify()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if raise_internal_errors:
            self.check()

    def check(self) -> None:
        if self.internal_errors:
            raise FakeTelegramBug(f"the fake produced invalid output: {self.internal_errors[0]}")

    def request(self, read_timeout_s: float | None = 10.0) -> FakeRequest:
        """A new in-process request object for `Bot(request=...)` or `ApplicationBuilder().request(...)`."""
        return FakeRequest(self, read_timeout_s)

    @property
    def base_url(self) -> str:
        """For `Bot(base_url=...)`/`ApplicationBuilder().base_url(...)`: `http://127.0.0.1:PORT/bot`."""
        if self._http is None:
            raise RuntimeError("the HTTP adapter is not running; use `async with FakeTelegram()` or start_http()")
        return f"http://127.0.0.1:{self._http.port}/bot"

    @property
    def base_file_url(self) -> str:
        return self.base_url.replace("/bot", "/file/bot")

    # -- the test's side: users do things ------------------------------------------------------------------

    def add_user(self, user_id: int, first_name: str | None = None, username: str | None = None) -> JSON:
        """Register (or rename) a user; users are created on first use anyway."""
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"}
        if username:
            user["username"] = username
        self._users[user_id] = user
        return user

    def operator_sends_text(self, user_id: int, chat_id: int, text: str) -> JSON:
        """The user sends `text` in `chat_id` (== user_id for the private chat); returns the queued Update."""
        return self._user_message(user_id, chat_id, {"text": text, **_command_entities(text)})

    def sends_command(self, user_id: int, chat_id: int, command: str, args: str = "") -> JSON:
        """The user sends `/command args` (a bot_command entity included)."""
        text = f"/{command.lstrip('/')}" + (f" {args}" if args else "")
        return self.operator_sends_text(user_id, chat_id, text)

    def stranger_sends(self, user_id: int, text: str, chat_id: int | None = None) -> JSON:
        """Someone who is not the operator writes to the bot (in their private chat by default)."""
        return self.operator_sends_text(user_id, user_id if chat_id is None else chat_id, text)

    def user_sends_document(
        self, user_id: int, chat_id: int, filename: str, content: bytes, caption: str | None = None,
        mime_type: str = "application/octet-stream",
    ) -> JSON:
        stored = self._store_file(UploadedFile(filename, content, mime_type))
        fields: JSON = {"document": self._document_json(stored)}
        if caption:
            fields["caption"] = caption
        return self._user_message(user_id, chat_id, fields)

    def user_sends_photo(self, user_id: int, chat_id: int, content: bytes, caption: str | None = None) -> JSON:
        """A photo (JPEG bytes), as Telegram delivers it: one PhotoSize per size, here the one."""
        stored = self._store_file(UploadedFile("photo.jpg", content, "image/jpeg"))
        size = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "width": 640, "height": 480,
                "file_size": len(content)}
        fields: JSON = {"photo": [size]}
        if caption:
            fields["caption"] = caption
        return self._user_message(user_id, chat_id, fields)

    def user_sends_voice(self, user_id: int, chat_id: int, content: bytes, duration_s: int = 3) -> JSON:
        stored = self._store_file(UploadedFile("voice.ogg", content, "audio/ogg"))
        voice = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "duration": duration_s,
                 "mime_type": "audio/ogg", "file_size": len(content)}
        return self._user_message(user_id, chat_id, {"voice": voice})

    def presses_button(
        self, user_id: int, message_id: int, data: str, chat_id: int | None = None, *, check_button: bool = True
    ) -> JSON:
        """The user taps an inline button with callback `data` under the bot's message `message_id`.

        With `check_button` (default) the button must exist on the message as it is now; pass False to forge
        data like a hostile client could.
        """
        chat = self._chat(user_id if chat_id is None else chat_id)
        message = chat.messages.get(message_id)
        if message is None:
            raise AssertionError(f"no message {message_id} in chat {chat.chat['id']}")
        buttons = [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
        if check_button and data not in [b.get("callback_data") for b in buttons]:
            raise AssertionError(f"message {message_id} has no button with callback_data {data!r}: {buttons}")
        query_id = f"{self.bot_user['id']}{next(self._callback_ids):08d}"
        query: JSON = {
            "id": query_id, "from": self._user(user_id), "message": message,
            "chat_instance": str(-(abs(chat.chat["id"]) * 7919 + 4_000_000_000_000_000)), "data": data,
        }
        self._open_queries[query_id] = query
        return self._enqueue("callback_query", query)

    def block_bot(self, user_id: int) -> None:
        """The user blocks the bot: sends to their private chat fail with 403."""
        self._blocked_by.add(user_id)

    # -- the test's side: scripted failures ----------------------------------------------------------------

    def script_flood_wait(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` answer 429 "Too Many Requests: retry after N"."""
        self.script_error(method, 429, f"Too Many Requests: retry after {retry_after}", times, retry_after)

    def script_error(
        self, method: str, error_code: int, description: str, times: int = 1, retry_after: int | None = None
    ) -> None:
        """The next `times` calls of `method` fail with this error (e.g. 502 "Bad Gateway")."""
        for _ in range(times):
            self._scripted[method.lower()].append(_ApiError(error_code, description, retry_after))

    def script_slow_answer(self, method: str, delay_s: float, times: int = 1) -> None:
        """The next `times` calls of `method` are carried out at once (a message is sent) but answered only
        after `delay_s`: a client with a shorter read timeout gives up on a request that succeeded."""
        self._delays[method.lower()].extend([delay_s] * times)

    # -- the test's side: what the bot did -----------------------------------------------------------------

    @property
    def sent_messages(self) -> list[BotMessage]:
        return [m for m in self.sent if m.kind == "text"]

    @property
    def sent_documents(self) -> list[BotMessage]:
        return [m for m in self.sent if m.kind == "document"]

    @property
    def sent_photos(self) -> list[BotMessage]:
        return [m for m in self.sent if m.kind == "photo"]

    def messages_to(self, chat_id: int) -> list[BotMessage]:
        return [m for m in self.sent if m.chat_id == chat_id]

    def current_message(self, chat_id: int, message_id: int) -> JSON | None:
        """The message as the user sees it now (after edits; None once deleted)."""
        chat = self._chats.get(chat_id)
        return None if chat is None else chat.messages.get(message_id)

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """The command list registered with setMyCommands for that scope (default scope by default)."""
        return self._commands.get((_scope_key(scope), language_code), [])

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._pending)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "it") -> None:
        """Wait until `predicate()` holds; fail the test with a summary of what the bot sent otherwise."""
        if not await self._changed.wait_for(predicate, timeout_s):
            sent = [(m.chat_id, m.kind, m.text[:80]) for m in self.sent]
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; calls={dict(self.calls)}, "
                                 f"sent={sent}, internal_errors={self.internal_errors}")

    async def wait_for_messages(self, chat_id: int, count: int = 1, timeout_s: float = 30.0) -> list[BotMessage]:
        """Wait until the bot has sent at least `count` messages (text, documents, photos) to `chat_id`."""
        await self.wait_for(lambda: len(self.messages_to(chat_id)) >= count, timeout_s,
                            f"{count} message(s) to chat {chat_id}")
        return self.messages_to(chat_id)

    async def wait_for_edits(self, chat_id: int, count: int = 1, timeout_s: float = 30.0) -> list[Edit]:
        def edits() -> list[Edit]:
            return [e for e in self.edits if e.chat_id == chat_id]

        await self.wait_for(lambda: len(edits()) >= count, timeout_s, f"{count} edit(s) in chat {chat_id}")
        return edits()

    async def wait_for_calls(self, method: str, count: int = 1, timeout_s: float = 30.0) -> int:
        name = self._canonical(method)
        await self.wait_for(lambda: self.calls[name] >= count, timeout_s, f"{count} call(s) of {name}")
        return self.calls[name]

    async def wait_for_delivery(self, timeout_s: float = 30.0) -> None:
        """Wait until every update queued so far was handed to the bot by getUpdates."""
        last = self._all_updates[-1]["update_id"] if self._all_updates else 0
        await self.wait_for(lambda: self._delivered_up_to >= last, timeout_s, f"delivery of update {last}")

    # -- serving requests (both adapters) ------------------------------------------------------------------

    async def handle(
        self, http_method: str, path: str, fields: dict[str, str], files: dict[str, UploadedFile]
    ) -> tuple[int, bytes, str]:
        """Serve one request: (status, body, content type). Raises FakeTelegramBug for invalid own output."""
        path = urllib.parse.unquote(path)
        file_match = re.fullmatch(r"/file/bot([^/]+)/(.+)", path)
        if file_match:
            return self._serve_file(file_match.group(1), file_match.group(2))
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        method = match.group(2) if match else ""
        try:
            if match is None or not _TOKEN_RE.fullmatch(match.group(1)):
                raise _ApiError(404, "Not Found")  # Telegram answers 404 to malformed tokens
            if match.group(1) != self.token:
                raise _ApiError(401, "Unauthorized")
            handler = self._handlers.get(method.lower())
            if handler is None:
                raise _ApiError(404, "Not Found")
            method = self._canonical(method)
            self.calls[method] += 1
            params = self._decode(method, fields)
            scripted = self._scripted.get(method.lower())
            if scripted:
                raise scripted.popleft()
            result = await handler(params, files)
            status, body = 200, self._ok_body(method, result)
        except _ApiError as exc:
            params = dict(fields)
            status, body = exc.code, self._error_body(exc)
        except Exception as exc:  # a bug of the fake, never a Telegram answer
            self.internal_errors.append(exc)
            raise FakeTelegramBug(f"{method}: {exc!r}") from exc
        if match:
            self.requests.append(Call(method, params, status))
        self._changed.notify()
        delays = self._delays.get(method.lower())
        if delays:
            await asyncio.sleep(delays.popleft())
        return status, json.dumps(body).encode(), "application/json"

    def _serve_file(self, token: str, file_path: str) -> tuple[int, bytes, str]:
        if token != self.token:
            return 401, json.dumps(_ApiError(401, "Unauthorized").body()).encode(), "application/json"
        for stored in self._files.values():
            if stored.file_path == file_path:
                return 200, stored.upload.content, stored.upload.mime_type or "application/octet-stream"
        return 404, json.dumps(_ApiError(404, "Not Found").body()).encode(), "application/json"

    def _ok_body(self, method: str, result: Any) -> JSON:
        self.spec.validate_method_result(method, result)
        return {"ok": True, "result": result}

    def _error_body(self, error: _ApiError) -> JSON:
        body = error.body()
        if "parameters" in body:
            try:
                self.spec.validate("ResponseParameters", body["parameters"])
            except SpecViolation as exc:
                self.internal_errors.append(exc)
                raise FakeTelegramBug(f"scripted error: {exc}") from exc
        return body

    def _canonical(self, method: str) -> str:
        spec = self.spec.method(method)
        return spec.name if spec is not None else method

    def _decode(self, method: str, fields: dict[str, str]) -> JSON:
        """Form fields are strings; JSON-decode those the spec does not type as plain String."""
        spec = self.spec.method(method)
        string_params = set(_STRING_PARAMS)
        if spec is not None:
            string_params |= {p.name for p in spec.params if p.types == ("String",)}
        params: JSON = {}
        for name, value in fields.items():
            if name in string_params:
                params[name] = value
                continue
            try:
                params[name] = json.loads(value)
            except ValueError:
                params[name] = value
        return params

    # -- methods -------------------------------------------------------------------------------------------

    async def _true(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        return True

    async def _get_me(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}

    async def _get_updates(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        if self.webhook.get("url"):
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use "
                                 "deleteWebhook to delete the webhook first")
        if "allowed_updates" in params:
            self._allowed_updates = list(params["allowed_updates"]) or None
        offset = params.get("offset")
        if isinstance(offset, int) and offset < 0:
            self._pending = self._pending[offset:]
        elif isinstance(offset, int):
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        timeout_s = max(float(params.get("timeout", 0)), 0.0)
        self._poll_generation += 1
        generation = self._poll_generation
        self._changed.notify()  # ends an older poll with 409
        await self._changed.wait_for(lambda: bool(self._pending) or self._poll_generation != generation,
                                     timeout_s)
        if self._poll_generation != generation:
            raise _ApiError(409, "Conflict: terminated by other getUpdates request; make sure that only one "
                                 "bot instance is running")
        batch = self._pending[:limit]
        if batch:
            self._delivered_up_to = max(self._delivered_up_to, batch[-1]["update_id"])
        return batch

    async def _send_message(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat = self._chat_for_send(params)
        source = params.get("text", "")
        if not isinstance(source, str) or not source.strip():
            raise _bad("message text is empty")
        text, entities = self._format(source, params.get("parse_mode"), params.get("entities"))
        if not text:
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        markup = self._inline_markup(params.get("reply_markup"))
        fields: JSON = {"text": text}
        if entities:
            fields["entities"] = entities
        message = self._bot_message(chat, fields, markup, params)
        self._record(chat, "text", text, source, params, entities, markup, message)
        return message

    async def _send_document(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat = self._chat_for_send(params)
        stored = self._input_file(params, files, "document")
        fields: JSON = {"document": self._document_json(stored)}
        return self._send_media(chat, "document", fields, stored, params)

    async def _send_photo(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat = self._chat_for_send(params)
        stored = self._input_file(params, files, "photo")
        size = _image_size(stored.upload.content)
        if size is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        photo = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "width": size[0],
                 "height": size[1], "file_size": len(stored.upload.content)}
        return self._send_media(chat, "photo", {"photo": [photo]}, stored, params)

    def _send_media(
        self, chat: _Chat, kind: Literal["document", "photo"], fields: JSON, stored: _StoredFile, params: JSON
    ) -> JSON:
        source = params.get("caption") or ""
        caption, entities = self._format(source, params.get("parse_mode"), params.get("caption_entities"))
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        if caption:
            fields["caption"] = caption
        if entities:
            fields["caption_entities"] = entities
        markup = self._inline_markup(params.get("reply_markup"))
        message = self._bot_message(chat, fields, markup, params)
        self._record(chat, kind, caption, source, params, entities, markup, message, stored.upload)
        return message

    async def _edit_message_text(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat, message = self._message_to_edit(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        source = params.get("text", "")
        if not isinstance(source, str) or not source.strip():
            raise _bad("text must be non-empty")
        text, entities = self._format(source, params.get("parse_mode"), params.get("entities"))
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise _bad("MESSAGE_TOO_LONG")
        markup = self._inline_markup(params.get("reply_markup"))
        if (text, entities, markup) == (message["text"], message.get("entities", []), message.get("reply_markup")):
            raise _bad(_NOT_MODIFIED.removeprefix("Bad Request: "))
        updated = {k: v for k, v in message.items() if k not in ("entities", "reply_markup")}
        updated.update(text=text, edit_date=self._now())
        if entities:
            updated["entities"] = entities
        return self._apply_edit(chat, updated, markup, "editMessageText", text, source, params)

    async def _edit_reply_markup(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat, message = self._message_to_edit(params)
        markup = self._inline_markup(params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise _bad(_NOT_MODIFIED.removeprefix("Bad Request: "))
        updated = {k: v for k, v in message.items() if k != "reply_markup"}
        updated["edit_date"] = self._now()
        return self._apply_edit(chat, updated, markup, "editMessageReplyMarkup", None, None, params)

    def _apply_edit(
        self, chat: _Chat, message: JSON, markup: JSON | None, method: str, text: str | None,
        source: str | None, params: JSON,
    ) -> JSON:
        if markup is not None:
            message["reply_markup"] = markup
        chat.messages[message["message_id"]] = message
        self.edits.append(Edit(chat.chat["id"], message["message_id"], method, text, source,
                               params.get("parse_mode"), markup, message))
        return message

    async def _delete_message(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        chat = self._known_chat(params.get("chat_id"))
        message_id = params.get("message_id")
        if chat is None or not isinstance(message_id, int) or chat.messages.pop(message_id, None) is None:
            raise _bad("message to delete not found")
        self.deletions.append((chat.chat["id"], message_id))
        return True

    async def _send_chat_action(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        chat = self._chat_for_send(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self.chat_actions.append(ChatAction(chat.chat["id"], params["action"]))
        return True

    async def _answer_callback_query(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        query = self._open_queries.pop(str(params.get("callback_query_id", "")), None)
        if query is None:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        self.callback_answers.append({"callback_query_id": query["id"], **params})
        return True

    async def _set_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        commands = params.get("commands")
        try:
            self.spec.validate("Array of BotCommand", commands)
        except SpecViolation as exc:
            raise _bad("can't parse commands JSON object") from exc
        assert isinstance(commands, list)
        if len(commands) > 100:
            raise _bad("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _COMMAND_RE.match(command["command"]):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"]) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self._commands[(_scope_key(params.get("scope")), params.get("language_code", ""))] = commands
        return True

    async def _get_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        return self.commands(params.get("scope"), params.get("language_code", ""))

    async def _delete_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        self._commands.pop((_scope_key(params.get("scope")), params.get("language_code", "")), None)
        return True

    async def _set_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        url = params.get("url", "")
        if url and not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = {k: v for k, v in params.items() if k != "drop_pending_updates"} if url else {}
        self._poll_generation += 1
        return True

    async def _delete_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = {}
        return True

    async def _get_webhook_info(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        info: JSON = {"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                      "pending_update_count": len(self._pending)}
        if self.webhook.get("max_connections"):
            info["max_connections"] = self.webhook["max_connections"]
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _get_file(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise _bad("invalid file_id")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.upload.content), "file_path": stored.file_path}

    # -- helpers: chats, messages, updates -----------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _user(self, user_id: int) -> JSON:
        return self._users.get(user_id) or self.add_user(user_id)

    def _chat(self, chat_id: int, user_id: int | None = None) -> _Chat:
        """The chat, created on first use: positive ids are private chats with that user, negative groups."""
        chat = self._chats.get(chat_id)
        if chat is not None:
            return chat
        if chat_id > 0:
            user = self._user(chat_id)
            info: JSON = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            if "username" in user:
                info["username"] = user["username"]
        elif chat_id < 0:
            info = {"id": chat_id, "type": "group", "title": f"Group {-chat_id}"}
        else:
            raise AssertionError("chat id 0 does not exist")
        if user_id is not None and chat_id > 0 and chat_id != user_id:
            raise AssertionError(f"user {user_id} cannot write in the private chat of {chat_id}")
        self._chats[chat_id] = _Chat(info)
        return self._chats[chat_id]

    def _known_chat(self, chat_id: Any) -> _Chat | None:
        return self._chats.get(chat_id) if isinstance(chat_id, int) else None

    def _chat_for_send(self, params: JSON) -> _Chat:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise _bad("chat_id is empty")
        if not isinstance(chat_id, int):
            raise _bad("chat not found")
        if chat_id in self._blocked_by:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        chat = self._known_chat(chat_id)
        if chat is None and chat_id > 0:
            chat = self._chat(chat_id)  # a user who started the bot earlier
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _message_to_edit(self, params: JSON) -> tuple[_Chat, JSON]:
        if "inline_message_id" in params:
            raise _bad("inline messages are not supported by the fake")
        if "message_id" not in params:
            raise _bad("message identifier is not specified")
        chat = self._known_chat(params.get("chat_id"))
        message = chat.messages.get(params["message_id"]) if chat is not None else None
        if chat is None or message is None:
            raise _bad("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _bad("message can't be edited")
        return chat, message

    def _format(self, source: str, parse_mode: Any, entities: Any) -> tuple[str, list[JSON]]:
        mode = (parse_mode or "").lower() if isinstance(parse_mode, str) else ""
        if mode == "html":
            text, parsed = parse_html(source)
        elif mode == "markdownv2":
            text, parsed = parse_markdown_v2(source)
        elif mode in ("", "markdown"):
            text, parsed = source, []
            if entities is not None:
                try:
                    self.spec.validate("Array of MessageEntity", entities)
                except SpecViolation as exc:
                    raise _bad("can't parse entities JSON object") from exc
                parsed = list(entities)
        else:
            raise _bad(f"unsupported parse_mode: {parse_mode}")
        return _strip(text, parsed)

    def _inline_markup(self, markup: Any) -> JSON | None:
        """Validate reply_markup; return it when it is an inline keyboard (the only kind a Message carries)."""
        if markup is None:
            return None
        kind = next((name for key, name in _MARKUP_KINDS if isinstance(markup, dict) and key in markup),
                    "InlineKeyboardMarkup")
        try:
            self.spec.validate(kind, markup)
        except SpecViolation as exc:
            raise _bad("can't parse reply keyboard markup JSON object") from exc
        if "inline_keyboard" not in markup:
            return None
        for row in markup["inline_keyboard"]:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                    raise _bad("BUTTON_DATA_INVALID")
        return markup if markup["inline_keyboard"] else None

    def _input_file(self, params: JSON, files: dict[str, UploadedFile], name: str) -> _StoredFile:
        value = params.get(name)
        upload = files.get(value.removeprefix("attach://")) if isinstance(value, str) and value.startswith(
            "attach://") else files.get(name)
        if upload is not None:
            if not upload.content:
                raise _bad("file must be non-empty")
            return self._store_file(upload)
        if isinstance(value, str) and value in self._files:
            return self._files[value]
        if value in (None, ""):
            raise _bad(f"there is no {name} in the request")
        raise _bad("wrong file identifier/HTTP URL specified")

    def _store_file(self, upload: UploadedFile) -> _StoredFile:
        number = next(self._file_ids)
        stored = _StoredFile(
            file_id=f"BQACAgIAAxkBAAI{number:06d}", file_unique_id=f"AgAD{number:06d}",
            file_path=f"documents/file_{number}{_suffix(upload.filename)}", upload=upload,
        )
        self._files[stored.file_id] = stored
        return stored

    def _document_json(self, stored: _StoredFile) -> JSON:
        document: JSON = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                          "file_size": len(stored.upload.content)}
        if stored.upload.filename:
            document["file_name"] = stored.upload.filename
        if stored.upload.mime_type:
            document["mime_type"] = stored.upload.mime_type
        return document

    def _new_message(self, chat: _Chat, sender: JSON, fields: JSON) -> JSON:
        message: JSON = {"message_id": chat.next_message_id, "from": sender, "chat": chat.chat,
                         "date": self._now(), **fields}
        chat.next_message_id += 1
        chat.messages[message["message_id"]] = message
        return message

    def _bot_message(self, chat: _Chat, fields: JSON, markup: JSON | None, params: JSON) -> JSON:
        reply_to = (params.get("reply_parameters") or {}).get("message_id")
        if reply_to is not None:
            replied = chat.messages.get(reply_to)
            if replied is None and not params["reply_parameters"].get("allow_sending_without_reply"):
                raise _bad("message to be replied not found")
            if replied is not None:
                fields = {**fields, "reply_to_message": {k: v for k, v in replied.items()
                                                         if k != "reply_to_message"}}
        if markup is not None:
            fields = {**fields, "reply_markup": markup}
        return self._new_message(chat, self.bot_user, fields)

    def _record(
        self, chat: _Chat, kind: Literal["text", "document", "photo"], text: str, source: str, params: JSON,
        entities: list[JSON], markup: JSON | None, message: JSON, upload: UploadedFile | None = None,
    ) -> None:
        self.sent.append(BotMessage(chat.chat["id"], message["message_id"], kind, text, source,
                                    params.get("parse_mode"), entities, markup, message, upload))

    def _user_message(self, user_id: int, chat_id: int, fields: JSON) -> JSON:
        chat = self._chat(chat_id, user_id)
        return self._enqueue("message", self._new_message(chat, self._user(user_id), fields))

    def _enqueue(self, kind: str, payload: JSON) -> JSON:
        update = {"update_id": next(self._update_ids), kind: payload}
        try:
            self.spec.validate("Update", update)
        except SpecViolation as exc:
            self.internal_errors.append(exc)
            raise FakeTelegramBug(f"invalid update: {exc}") from exc
        self._all_updates.append(update)
        allowed = self._allowed_updates
        if (kind in allowed) if allowed else (kind not in _DEFAULT_EXCLUDED_UPDATES):
            self._pending.append(update)
        self._changed.notify()
        return update


def _command_entities(text: str) -> JSON:
    entities = [
        {"type": "bot_command", "offset": utf16_len(text[: m.start()]), "length": utf16_len(m.group())}
        for m in _BOT_COMMAND_IN_TEXT.finditer(text)
    ]
    return {"entities": entities} if entities else {}


def _scope_key(scope: Any) -> str:
    return json.dumps(scope or {"type": "default"}, sort_keys=True)


def _suffix(filename: str | None) -> str:
    if not filename or "." not in filename:
        return ""
    return "." + re.sub(r"[^A-Za-z0-9]", "", filename.rsplit(".", 1)[1])[:10]


# -- adapter 1: in process ----------------------------------------------------------------------------------


class FakeRequest(BaseRequest):
    """A `telegram.request.BaseRequest` that serves PTB's calls from a FakeTelegram without a socket."""

    def __init__(self, fake: FakeTelegram, read_timeout_s: float | None = 10.0) -> None:
        self._fake = fake
        self._read_timeout = read_timeout_s

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        fields = dict(request_data.json_parameters) if request_data is not None else {}
        files: dict[str, UploadedFile] = {}
        if request_data is not None and request_data.contains_files:
            for name, (filename, content, mime_type) in request_data.multipart_data.items():
                data = content if isinstance(content, bytes) else content.read()
                files[name] = UploadedFile(filename, data, mime_type)
        status, body, _ = await self._fake.handle(method, urllib.parse.urlsplit(url).path, fields, files)
        return status, body


# -- adapter 2: HTTP on 127.0.0.1 -----------------------------------------------------------------------------


class _HttpServer:
    """A small HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) on the running event loop."""

    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # the client went away, or stop() ended the connection (end normally: asyncio logs otherwise)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = await reader.readline()
        if not request_line.strip():
            return False
        verb, target, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers)
        url = urllib.parse.urlsplit(target)
        fields, files = _parse_fields(url.query, headers.get("content-type", ""), body)
        try:
            status, payload, content_type = await self._fake.handle(verb, url.path, fields, files)
        except FakeTelegramBug as exc:
            status, payload, content_type = 500, str(exc).encode(), "text/plain"
        keep_alive = headers.get("connection", "").lower() != "close"
        head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode("latin-1") + payload)
        await writer.drain()
        return keep_alive


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            body += await reader.readexactly(size)
            await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        return bytes(body)
    return await reader.readexactly(int(headers.get("content-length", "0") or 0))


def _parse_fields(query: str, content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    fields = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    files: dict[str, UploadedFile] = {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" and body:
        decoded = json.loads(body)
        fields.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()})
    elif kind == "application/x-www-form-urlencoded":
        fields.update(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif kind == "multipart/form-data":
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            raise ValueError("multipart body without boundary")
        _parse_multipart(body, boundary.group(1).encode("latin-1"), fields, files)
    return fields, files


def _parse_multipart(body: bytes, boundary: bytes, fields: dict[str, str], files: dict[str, UploadedFile]) -> None:
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        header_text = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', header_text)
        if name is None:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', header_text)
        mime = re.search(r"(?im)^content-type:\s*(\S+)", header_text)
        if filename is not None:
            files[name.group(1)] = UploadedFile(filename.group(1), content, mime.group(1) if mime else None)
        else:
            fields[name.group(1)] = content.decode("utf-8")
