"""The fake Bot API, proven with the real python-telegram-bot client through both adapters."""

from __future__ import annotations

import asyncio
import datetime as dtm
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)

from tests.fakes.fake_telegram import FakeTelegram, FakeTelegramBug
from tests.fakes.telegram_spec import SpecViolation, TelegramSpec, default_spec

OPERATOR = 4242
STRANGER = 666
ADAPTERS = ["in_process", "http"]


def _make_bot(fake: FakeTelegram, adapter: str, token: str | None = None, **kwargs: Any) -> ExtBot[None]:
    token = token or fake.token
    if adapter == "in_process":
        return ExtBot(token, request=fake.request(), get_updates_request=fake.request(), **kwargs)
    return ExtBot(token, base_url=fake.base_url, base_file_url=fake.base_file_url, **kwargs)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\0\0\0" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture(params=ADAPTERS)
async def bot(request: pytest.FixtureRequest, fake: FakeTelegram) -> AsyncIterator[ExtBot[None]]:
    async with _make_bot(fake, request.param) as bot:
        yield bot


# -- basic methods ------------------------------------------------------------------------------------------


async def test_get_me(bot: Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()
    assert me.is_bot
    assert me.id == int(fake.token.split(":")[0])
    assert me.username == fake.bot_user["username"]
    assert fake.calls["getMe"] >= 1


async def test_send_edit_delete(bot: Bot, fake: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry:7")]])
    sent = await bot.send_message(OPERATOR, "<b>Job 7</b> done &amp; reviewed", parse_mode=ParseMode.HTML,
                                  reply_markup=keyboard)
    assert sent.text == "Job 7 done & reviewed"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 5)]
    assert sent.from_user is not None and sent.from_user.is_bot
    assert sent.chat.type == "private"
    record = fake.sent_messages[0]
    assert (record.chat_id, record.message_id, record.callback_data) == (OPERATOR, sent.message_id, ["retry:7"])
    assert record.source.startswith("<b>")

    second = await bot.send_message(OPERATOR, "next")
    assert second.message_id == sent.message_id + 1

    edited = await bot.edit_message_text("Job 7: <i>retrying</i>", OPERATOR, sent.message_id,
                                         parse_mode=ParseMode.HTML)
    assert isinstance(edited, type(sent)) and edited.edit_date is not None
    assert edited.text == "Job 7: retrying" and edited.reply_markup is None  # no markup given: keyboard removed
    assert fake.edits[-1].text == "Job 7: retrying"
    assert fake.current_message(OPERATOR, sent.message_id)["text"] == "Job 7: retrying"  # type: ignore[index]

    assert await bot.delete_message(OPERATOR, sent.message_id) is True
    assert fake.current_message(OPERATOR, sent.message_id) is None
    assert fake.deletions == [(OPERATOR, sent.message_id)]
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(OPERATOR, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", OPERATOR, 999)
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(-100, "nobody here")


async def test_documents_photos_and_downloads(bot: Bot, fake: FakeTelegram) -> None:
    report = "line\n" * 2000
    doc_message = await bot.send_document(OPERATOR, report.encode(), filename="job-7.md",
                                          caption="<b>Result</b> of job 7", parse_mode=ParseMode.HTML)
    assert doc_message.document is not None and doc_message.document.file_name == "job-7.md"
    assert doc_message.caption == "Result of job 7"
    record = fake.sent_documents[0]
    assert record.file is not None and record.file.content == report.encode()
    downloaded = await (await bot.get_file(doc_message.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == report.encode()

    photo_message = await bot.send_photo(OPERATOR, _png(3, 2), caption="stats")
    assert [(p.width, p.height) for p in photo_message.photo] == [(3, 2)]
    assert fake.sent_photos[0].text == "stats"
    with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
        await bot.send_photo(OPERATOR, b"not an image")
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_document(OPERATOR, b"x", filename="a.txt", caption="c" * 1025)
    assert [m.kind for m in await fake.wait_for_messages(OPERATOR, 2)] == ["document", "photo"]


async def test_chat_actions_commands_and_webhooks(bot: Bot, fake: FakeTelegram) -> None:
    assert await bot.send_chat_action(OPERATOR, "typing")
    assert fake.chat_actions[-1].action == "typing"
    with pytest.raises(BadRequest, match=r"(?i)wrong parameter action"):
        await bot.send_chat_action(OPERATOR, "dancing")

    assert await bot.set_my_commands([("status", "Show the status"), ("jobs", "List jobs")])
    assert [c["command"] for c in fake.commands()] == ["status", "jobs"]
    assert [c.command for c in await bot.get_my_commands()] == ["status", "jobs"]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Bad-Command", "x")])

    assert (await bot.get_webhook_info()).url == ""
    with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
        await bot.set_webhook("http://insecure.example/hook")
    assert await bot.set_webhook("https://example.org/hook", secret_token="s3cret")
    assert (await bot.get_webhook_info()).url == "https://example.org/hook"
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates()
    assert await bot.delete_webhook()
    assert await bot.close() and await bot.log_out()


# -- updates and long polling -------------------------------------------------------------------------------


async def test_updates_are_valid_and_confirmed_by_offset(bot: Bot, fake: FakeTelegram) -> None:
    fake.add_user(OPERATOR, "Ada", "ada")
    fake.operator_sends_text(OPERATOR, OPERATOR, "research tide tables")
    fake.sends_command(OPERATOR, OPERATOR, "job", "12")
    fake.stranger_sends(STRANGER, "hi bot")
    updates = await bot.get_updates(timeout=0)
    assert [u.effective_user.id for u in updates] == [OPERATOR, OPERATOR, STRANGER]  # type: ignore[union-attr]
    first, command, stranger = (u.message for u in updates)
    assert first is not None and command is not None and stranger is not None
    assert first.text == "research tide tables" and first.from_user.username == "ada"  # type: ignore[union-attr]
    assert first.chat.type == "private" and first.date.year >= 2024  # seconds, not milliseconds
    assert command.message_id == first.message_id + 1
    assert [(e.type, e.offset, e.length) for e in command.entities] == [("bot_command", 0, 4)]
    assert stranger.chat.id == STRANGER and stranger.message_id == 1

    sent = await bot.send_message(OPERATOR, "Queued job 12", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("Cancel", callback_data="cancel:12")]]))
    fake.presses_button(OPERATOR, sent.message_id, "cancel:12")
    with pytest.raises(AssertionError, match="no button"):
        fake.presses_button(OPERATOR, sent.message_id, "forged")
    [press] = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    query = press.callback_query
    assert query is not None and query.data == "cancel:12" and query.chat_instance
    assert query.message is not None and query.message.message_id == sent.message_id
    assert await bot.answer_callback_query(query.id, text="Cancelled")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query.id)

    assert await bot.get_updates(offset=press.update_id + 1, timeout=0) == ()
    assert fake.pending_updates == []


async def test_get_updates_blocks_until_an_update_arrives(bot: Bot, fake: FakeTelegram) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for_calls("getUpdates", 1)
    assert await bot.get_me()  # a later request, served in full while the poll is open
    # still waiting: a long poll, not an instant empty answer (the fake records a request once it answers it)
    assert [c.method for c in fake.requests][-1] == "getMe" and "getUpdates" not in {c.method for c in fake.requests}
    assert not poll.done()
    fake.operator_sends_text(OPERATOR, OPERATOR, "wake up")
    [update] = await asyncio.wait_for(poll, 2)
    assert update.message is not None and update.message.text == "wake up"
    assert loop.time() - started < 2


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_second_poller_conflicts(fake: FakeTelegram, adapter: str) -> None:
    async with _make_bot(fake, adapter) as first_bot, _make_bot(fake, adapter) as second_bot:
        first = asyncio.create_task(first_bot.get_updates(timeout=5))
        await fake.wait_for_calls("getUpdates", 1)
        assert await second_bot.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates"):
            await first


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_polling_does_not_spin(fake: FakeTelegram, adapter: str) -> None:
    app = ApplicationBuilder().bot(_make_bot(fake, adapter)).build()
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=dtm.timedelta(seconds=1), poll_interval=0)
        loop = asyncio.get_running_loop()
        begun = await fake.wait_for_calls("getUpdates", 1)
        await fake.wait_for_calls("getUpdates", begun + 1)  # the next poll begins: nothing came, it was idle
        started = loop.time()
        await fake.wait_for_calls("getUpdates", begun + 2)  # and ends (the poller asks again)
        idle_poll_s = loop.time() - started
        await app.updater.stop()
        await app.stop()
    assert idle_poll_s >= 0.9, f"an idle getUpdates took {idle_poll_s:.3f} s, not its 1 s: the fake does not long-poll"


# -- an Application over the HTTP adapter ----------------------------------------------------------------


async def test_application_handles_messages_and_buttons_over_http(fake: FakeTelegram) -> None:
    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(
            f"Queued: {update.effective_message.text}",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data="cancel:1")]]),
        )

    async def on_status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_html("<b>1</b> job running")

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("Cancelling")
        await query.edit_message_text(f"Cancelled ({query.data})")

    app = ApplicationBuilder().token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url).build()
    app.add_handler(CommandHandler("status", on_status))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(CallbackQueryHandler(on_button))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=dtm.timedelta(seconds=1), poll_interval=0)

        fake.operator_sends_text(OPERATOR, OPERATOR, "write a haiku")
        [reply] = await fake.wait_for_messages(OPERATOR, 1)
        assert reply.text == "Queued: write a haiku"
        fake.sends_command(OPERATOR, OPERATOR, "status")
        status = (await fake.wait_for_messages(OPERATOR, 2))[1]
        assert status.text == "1 job running" and status.entities[0]["type"] == "bold"

        fake.presses_button(OPERATOR, reply.message_id, "cancel:1")
        [edit] = await fake.wait_for_edits(OPERATOR, 1)
        assert edit.text == "Cancelled (cancel:1)"
        await fake.wait_for(lambda: len(fake.callback_answers) == 1, what="the callback answer")
        assert fake.callback_answers[0]["text"] == "Cancelling"

        await app.updater.stop()
        await app.stop()
    assert fake.pending_updates == []


# -- Telegram's rules -----------------------------------------------------------------------------------------


async def test_message_length_is_counted_after_entity_parsing(bot: Bot, fake: FakeTelegram) -> None:
    assert (await bot.send_message(OPERATOR, "x" * 4096)).text == "x" * 4096
    assert await bot.send_message(OPERATOR, "<b>" + "x" * 4096 + "</b>", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)^message is too long$"):
        await bot.send_message(OPERATOR, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(OPERATOR, "😀" * 2049)  # 4098 UTF-16 code units
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(OPERATOR, "<b> </b>", parse_mode=ParseMode.HTML)
    assert len(fake.sent_messages) == 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("load < 5", 'unsupported start tag "" at byte offset 5'),
        ("a<br>b", 'unsupported start tag "br" at byte offset 1'),
        ("<b>bold", 'can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "unexpected end tag at byte offset 1"),
    ],
)
async def test_bad_html_is_rejected(bot: Bot, text: str, error: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(OPERATOR, text, parse_mode=ParseMode.HTML)
    assert caught.value.message.lower() == f"can't parse entities: {error}".lower()


async def test_markdown_v2_reserved_characters(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
        await bot.send_message(OPERATOR, "cost: 1.50", parse_mode=ParseMode.MARKDOWN_V2)
    sent = await bot.send_message(OPERATOR, r"*cost*: 1\.50", parse_mode=ParseMode.MARKDOWN_V2)
    assert sent.text == "cost: 1.50" and sent.entities[0].type == "bold"


async def test_editing_to_identical_content_is_not_modified(bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="r")]])
    sent = await bot.send_message(OPERATOR, "<b>50%</b>", parse_mode=ParseMode.HTML, reply_markup=keyboard)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("<b>50%</b>", OPERATOR, sent.message_id, parse_mode=ParseMode.HTML,
                                    reply_markup=keyboard)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_reply_markup(OPERATOR, sent.message_id, reply_markup=keyboard)
    # Same text, different formatting is a modification; so is dropping the keyboard.
    assert await bot.edit_message_text("50%", OPERATOR, sent.message_id, reply_markup=keyboard)
    assert await bot.edit_message_text("50%", OPERATOR, sent.message_id)


async def test_callback_data_is_limited_to_64_bytes(bot: Bot) -> None:
    def keyboard(data: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("go", callback_data=data)]])

    assert await bot.send_message(OPERATOR, "ok", reply_markup=keyboard("a" * 64))
    with pytest.raises(BadRequest, match=r"(?i)^button_data_invalid$"):
        await bot.send_message(OPERATOR, "too long", reply_markup=keyboard("a" * 65))
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(OPERATOR, "bytes, not characters", reply_markup=keyboard("é" * 33))


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_flood_wait_raises_without_limiter_and_is_honoured_with_one(fake: FakeTelegram, adapter: str) -> None:
    async with _make_bot(fake, adapter) as plain:
        fake.script_flood_wait("sendMessage", retry_after=1, times=1)
        with pytest.raises(RetryAfter) as caught:
            await plain.send_message(OPERATOR, "first")
        assert caught.value.retry_after in (1, dtm.timedelta(seconds=1))
        assert not fake.sent_messages

    async with _make_bot(fake, adapter, rate_limiter=AIORateLimiter(max_retries=2)) as limited:
        fake.script_flood_wait("sendMessage", retry_after=1, times=1)
        calls_before = fake.calls["sendMessage"]
        started = asyncio.get_running_loop().time()
        await limited.send_message(OPERATOR, "second")
        waited_s = asyncio.get_running_loop().time() - started
    assert fake.calls["sendMessage"] - calls_before == 2
    assert waited_s >= 0.9
    assert [m.text for m in fake.sent_messages] == ["second"]


async def test_scripted_errors_and_blocked_users(bot: Bot, fake: FakeTelegram) -> None:
    fake.script_error("sendMessage", 502, "Bad Gateway")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(OPERATOR, "x")
    fake.block_bot(STRANGER)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(STRANGER, "x")


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_wrong_token_is_unauthorized(fake: FakeTelegram, adapter: str) -> None:
    for token, status in (("111:AAWellFormedButWrongToken_123456", 401), ("wrong", 404)):
        bot = _make_bot(fake, adapter, token=token)
        try:
            with pytest.raises(InvalidToken, match="rejected by the server"):
                await bot.initialize()
        finally:
            await bot.shutdown()
        assert fake.requests[-1].status == status
    assert fake.calls["getMe"] == 0


async def test_unknown_method_is_404(bot: Bot, fake: FakeTelegram) -> None:
    with pytest.raises(EndPointNotFound, match="sendTelepathy"):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": OPERATOR})
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.base_url}{fake.token}/sendTelepathy")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_raw_http_form_and_json_bodies(fake: FakeTelegram) -> None:
    async with httpx.AsyncClient() as client:
        form = await client.post(f"{fake.base_url}{fake.token}/sendMessage", data={"chat_id": "7", "text": "123"})
        as_json = await client.post(f"{fake.base_url}{fake.token}/sendMessage", json={"chat_id": 7, "text": "hi"})
        get_me = await client.get(f"{fake.base_url}{fake.token}/getme")
    assert form.json()["result"]["text"] == "123"  # a String parameter stays a string
    assert as_json.json()["result"]["message_id"] == 2
    assert get_me.json()["result"]["is_bot"] is True


async def test_invalid_output_of_the_fake_fails_loudly() -> None:
    class BrokenFake(FakeTelegram):
        async def _get_me(self, params: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
            return {"id": 1, "first_name": "no is_bot"}

    broken = BrokenFake(http=False)
    bot = Bot(broken.token, request=broken.request(), get_updates_request=broken.request())
    with pytest.raises(NetworkError, match="is_bot"):
        await bot.get_me()
    with pytest.raises(FakeTelegramBug, match="is_bot"):
        await broken.aclose()


# -- the spec validator ------------------------------------------------------------------------------------

_USER = {"id": 1, "is_bot": True, "first_name": "Bot"}
_MESSAGE = {"message_id": 1, "date": 1_750_000_000, "chat": {"id": 5, "type": "private"}}


def _specs(tmp_path: Path) -> list[TelegramSpec]:
    return [default_spec(), TelegramSpec.load(tmp_path / "absent.json")]


def test_the_reference_spec_is_used() -> None:
    """The spec ships with the tests (tests/fixtures): the strict check runs in every clone."""
    spec = default_spec()
    assert spec.from_file and spec.version.startswith("Bot API ")


def test_validator_rejects_malformed_objects(tmp_path: Path) -> None:
    for spec in _specs(tmp_path):
        spec.validate("User", _USER)
        spec.validate("Message", _MESSAGE)
        spec.validate_method_result("editMessageText", True)
        with pytest.raises(SpecViolation, match="is_bot"):
            spec.validate_method_result("getMe", {"id": 1, "first_name": "Bot"})
        with pytest.raises(SpecViolation, match="milliseconds"):
            spec.validate("Message", {**_MESSAGE, "date": 1_750_000_000_000})
        with pytest.raises(SpecViolation, match="chat_instance"):
            spec.validate("CallbackQuery", {"id": "1", "from": {**_USER, "is_bot": False}, "data": "x"})
        with pytest.raises(SpecViolation, match="Boolean"):
            spec.validate_method_result("editMessageText", None)
        with pytest.raises(SpecViolation, match="expected Integer"):
            spec.validate("User", {**_USER, "id": "1"})
        with pytest.raises(SpecViolation, match="expected Integer"):
            spec.validate("User", {**_USER, "id": True})


def test_validator_checks_unknown_fields_unions_and_subtypes() -> None:
    spec = default_spec()
    assert spec.from_file, "tests/fixtures/telegram-bot-api/api.json is missing"
    with pytest.raises(SpecViolation, match="unknown field"):
        spec.validate("User", {**_USER, "is_robot": True})
    spec.validate("Array of Array of InlineKeyboardButton", [[{"text": "a", "callback_data": "b"}]])
    with pytest.raises(SpecViolation, match=r"\[0\]\[0\]"):
        spec.validate("Array of Array of InlineKeyboardButton", [[{"callback_data": "b"}]])
    spec.validate("MessageOrigin", {"type": "user", "date": 1_750_000_000, "sender_user": _USER})
    with pytest.raises(SpecViolation, match="sender_chat"):
        spec.validate("MessageOrigin", {"type": "chat", "date": 1_750_000_000, "sender_user": _USER})
    spec.validate("ChatMember", {"status": "member", "user": _USER})
    with pytest.raises(SpecViolation):
        spec.validate("ChatMember", {"status": "emperor", "user": _USER})
    spec.validate("MaybeInaccessibleMessage", {"chat": {"id": 1, "type": "private"}, "message_id": 3, "date": 0})
    with pytest.raises(SpecViolation, match="positive"):
        spec.validate("Message", {**_MESSAGE, "date": 0})
    spec.validate("Message", {**_MESSAGE, "forward_origin": {"type": "hidden_user", "date": 1_750_000_000,
                                                             "sender_user_name": "anon"}})
    with pytest.raises(SpecViolation, match="no such method"):
        spec.validate_method_result("sendTelepathy", True)


async def test_the_fake_runs_on_the_built_in_fallback(tmp_path: Path) -> None:
    async with FakeTelegram(spec=TelegramSpec.load(tmp_path / "absent.json"), http=False) as fake:
        assert not fake.spec.from_file
        async with _make_bot(fake, "in_process") as bot:
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry:1")]])
            sent = await bot.send_message(OPERATOR, "<i>failed</i>", parse_mode=ParseMode.HTML, reply_markup=keyboard)
            fake.presses_button(OPERATOR, sent.message_id, "retry:1")
            [update] = await bot.get_updates(timeout=0)
            assert update.callback_query is not None and update.callback_query.data == "retry:1"
            assert await bot.edit_message_text("retrying", OPERATOR, sent.message_id)
