"""Updates in: the guard, free text, slash commands and buttons. Each handler turns an Update into one call on
the engine; every answer leaves through the outbox (durable, ordered, flood-wait aware, sent once).

Order of work for every update: the guard (group -1) turns strangers away and records the update id in the
inbox (a redelivered update stops there), then exactly one handler in group 0 runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import CallbackQuery, Chat, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ContextTypes,
    ExtBot,
    JobQueue,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.services import Services
from bot.telegram.media import answer_media
from engine.control import parse_duration, parse_job_id
from engine.errors import OPERATOR_ERRORS, describe_error
from engine.text import clip

log = logging.getLogger(__name__)

# The Application channel._build_app makes: default context types; AIORateLimiter makes its bot an ExtBot[int].
TelegramApp = Application[
    ExtBot[int],
    ContextTypes.DEFAULT_TYPE,
    dict[Any, Any],
    dict[Any, Any],
    dict[Any, Any],
    JobQueue[ContextTypes.DEFAULT_TYPE],
]


class Handlers:
    """Reach the engine through ``services.control`` (typed, passed in, never looked up by string key)."""

    def __init__(self, services: Services, wake_sender: Callable[[], None]) -> None:
        self._s = services
        self._wake_sender = wake_sender
        self._operators = frozenset(services.settings.telegram.operator_ids)
        self._allowed_chats = frozenset(services.settings.telegram.allowed_chats)

    def install(self, app: TelegramApp) -> None:
        app.add_handler(TypeHandler(Update, self.guard), group=-1)
        app.add_handler(MessageHandler(filters.COMMAND, self.on_command))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageHandler(filters.ALL, self.on_other))
        app.add_error_handler(self.on_error)

    # ---- group -1 ---------------------------------------------------------------------------------------

    async def guard(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Fail closed: only the operators get through, and each update only once."""
        user = update.effective_user
        if user is None or user.id not in self._operators:
            self._s.control.strangers += 1
            kind = "callback_query" if update.callback_query else "message" if update.message else "other"
            log.warning(
                "turned away a stranger: user %s, %s (update %d)", user.id if user else "?", kind, update.update_id
            )
            raise ApplicationHandlerStop
        chat = _chat_of(update)
        if chat is None or (chat.type != ChatType.PRIVATE and chat.id not in self._allowed_chats):
            log.warning(
                "ignored an operator's update in chat %s (%s): not a private chat and not in [telegram] "
                "allowed_chats (update %d)", chat.id if chat else "?", chat.type if chat else "none", update.update_id
            )
            raise ApplicationHandlerStop
        message = update.message
        if message is not None and message.text and not filters.COMMAND.check_update(update):
            return  # free text: on_text records the update, the message and its job in one transaction
        if not await self._s.control.claim_update(update.update_id):
            log.info("update %d was already handled; ignoring the redelivery", update.update_id)
            raise ApplicationHandlerStop

    # ---- group 0 ----------------------------------------------------------------------------------------

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or not message.text:
            return
        text, cut = clip(message.text)
        if await self._s.control.chat(chat.id, text, update_id=update.update_id) is None:
            log.info("update %d was already handled; ignoring the redelivery", update.update_id)
            return
        if cut:
            await self._answer(f"cut:{update.update_id}", chat.id, cut)
        await _typing(context, chat.id)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or not message.text:
            return
        text, cut = clip(message.text)
        answer = await self._s.commands.handle(text)
        answer = f"{cut}\n\n{answer}" if cut else answer
        payload: dict[str, object] = {}
        name, _, args = text.lstrip("/").partition(" ")
        if name.split("@", 1)[0].lower() == "stats" and not answer.startswith("Cannot"):
            payload = {"chart": "stats", "since": self._s.control.clock.now() - parse_duration(args.strip() or "7d")}
        await self._answer(f"cmd:{update.update_id}", chat.id, answer, payload)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        verb, _, raw_id = (query.data or "").partition(":")
        if verb in _CONFIRMATIONS:  # a persona action waiting for the operator's OK: the /confirm command's path
            text = await self._s.commands.handle(f"/{_CONFIRMATIONS[verb]} {raw_id}")
            await _answer_query(query, text)
            chat_id = query.message.chat.id if query.message is not None else None
            await self._answer(f"button:{update.update_id}", chat_id, text)
            return
        action = _BUTTONS.get(verb)
        if action is None or not raw_id.isdigit():
            await _answer_query(query, "That button is no longer valid.")
            return
        try:
            text, toast = await action(self, parse_job_id(raw_id))
        except OPERATOR_ERRORS as exc:
            text, toast = f"Cannot do that: {describe_error(exc)}", "Cannot do that"
        await _answer_query(query, toast)
        chat_id = query.message.chat.id if query.message is not None else None
        await self._answer(f"button:{update.update_id}", chat_id, text)

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Documents, photos, voice notes (``bot.telegram.media``); anything else is answered with what I read."""
        chat = update.effective_chat
        message = update.effective_message
        if chat is not None and message is not None:
            await _typing(context, chat.id)
            await self._answer(f"cmd:{update.update_id}", chat.id, await answer_media(self._s, context.bot, message))

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else "?"
        log.error("handling update %s failed: %r", update_id, context.error)  # no message text: it may be private

    # ---- buttons ----------------------------------------------------------------------------------------

    async def _retry(self, job_id: int) -> tuple[str, str]:
        job = await self._s.control.retry(job_id)
        return f"Job #{job.id} queued again.", "Queued again"

    async def _reroute(self, job_id: int) -> tuple[str, str]:
        job = await self._s.control.reroute(job_id)
        where = f"avoiding {job.avoid_backend}" if job.avoid_backend else "on the next backend that is up"
        return f"Job #{job.id} queued again, {where}.", "Queued again"

    async def _approve(self, job_id: int) -> tuple[str, str]:
        job = await self._s.control.approve(job_id)
        return f"Job #{job.id} approved by you and marked done.", "Approved"

    async def _revise(self, job_id: int) -> tuple[str, str]:
        job = await self._s.control.revise_again(job_id)
        return f"Job #{job.id}: another revision queued.", "Revision queued"

    async def _cancel(self, job_id: int) -> tuple[str, str]:
        job = await self._s.control.cancel(job_id)
        return f"Job #{job.id} cancelled.", "Cancelled"

    async def _show(self, job_id: int) -> tuple[str, str]:
        return await self._s.commands.handle(f"/job {job_id}"), f"Job #{job_id}"

    # ---- answers ----------------------------------------------------------------------------------------

    async def _answer(self, key: str, chat_id: int | None, text: str, payload: dict[str, object] | None = None) -> None:
        await self._s.control.reply(key, chat_id, text, payload)
        self._wake_sender()


_BUTTONS: dict[str, Callable[[Handlers, int], Awaitable[tuple[str, str]]]] = {
    "retry": Handlers._retry,
    "reroute": Handlers._reroute,
    "approve": Handlers._approve,
    "revise": Handlers._revise,
    "cancel": Handlers._cancel,
    "job": Handlers._show,
}


# Buttons under a persona's reply: run (or drop) the action it staged, keyed by chat job and place in the reply.
_CONFIRMATIONS = {"act": "confirm", "drop": "drop"}


def _chat_of(update: Update) -> Chat | None:
    """The chat an update happened in; for a button, the chat of the message that carries it."""
    query = update.callback_query
    if query is not None:
        return query.message.chat if query.message is not None else None
    return update.effective_chat


async def _answer_query(query: CallbackQuery, text: str) -> None:
    try:
        await query.answer(text[:200])
    except TelegramError as exc:  # an old query cannot be answered; the action itself was done
        log.info("callback query not answered: %s", exc)


async def _typing(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    try:
        await context.bot.send_chat_action(chat_id, ChatAction.TYPING)
    except TelegramError as exc:
        log.debug("typing indicator not sent: %s", exc)
