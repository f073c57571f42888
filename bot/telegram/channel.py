"""The Telegram channel: a python-telegram-bot Application run by hand inside the composition root's loop.

Lifecycle (``run``): refuse a configuration that is not fail-closed; ``async with app`` (initialize), register
the command list, ``app.start()``, long polling without dropping the backlog (or our webhook server on the
registered path, with a secret token and a body limit: ``bot.telegram.webhook``), then the outbox sender and
the live activity loop; on ``stop`` everything is stopped in reverse.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
from collections.abc import Callable

from telegram import BotCommand, Update
from telegram.error import InvalidToken, NetworkError, TimedOut
from telegram.ext import AIORateLimiter, ApplicationBuilder
from telegram.request import BaseRequest

from bot.commands import COMMANDS
from bot.services import Services
from bot.telegram.handlers import Handlers, TelegramApp
from bot.telegram.live import LiveActivity
from bot.telegram.sender import OutboxSender
from bot.telegram.webhook import WebhookServer, webhook_path
from engine.control import CHANNEL_PROBLEM_KEY
from engine.errors import ChannelRefused
from engine.redaction import redact
from engine.settings import BOT_TOKEN_ENV, Settings

log = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
UNREACHABLE_WARN_EVERY_S = 60.0  # an unreachable Telegram is retried on, but said at most once a minute


def refusal(settings: Settings) -> str | None:
    """Why the Telegram channel must not start, or None. Fail closed: no operator, no bot."""
    telegram = settings.telegram
    if not telegram.operator_ids:
        return (
            f"{BOT_TOKEN_ENV} is set but [telegram] operator_ids is empty: refusing to serve anyone. "
            "Add your numeric Telegram user id to switchboard.toml."
        )
    if telegram.webhook_url and not telegram.webhook_secret:
        return (
            f"[telegram] webhook_url is set but ${telegram.webhook_secret_env} is empty: a webhook without a "
            "secret token would accept forged updates. Set it, or remove webhook_url to use long polling."
        )
    return None


class TelegramChannel:
    """The channel over ``services``; the bot token is ``services.settings.telegram.bot_token``."""

    def __init__(
        self,
        services: Services,
        *,
        request: BaseRequest | None = None,
        get_updates_request: BaseRequest | None = None,
        limiter_retries: int = 3,
        poll_timeout_s: float = 10.0,
        sender_poll_s: float = 0.25,
        live_tick_s: float = 1.0,
    ) -> None:
        settings = services.settings
        problem = refusal(settings)
        if problem:
            raise ChannelRefused(problem)
        token = settings.telegram.bot_token
        if token is None:
            raise ChannelRefused(f"no bot token: set {BOT_TOKEN_ENV}")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry the token in URLs
        self._settings = settings
        self._token = token
        self._store = services.store
        self._clock = services.clock
        self._poll_timeout_s = poll_timeout_s
        self._webhook: WebhookServer | None = None
        self.app = _build_app(settings, token.get_secret_value(), request, get_updates_request, limiter_retries)
        self.sender = OutboxSender(
            settings, services.store, self.app.bot, self._clock, poll_s=sender_poll_s, redactor=services.redactor
        )
        self.live = LiveActivity(settings, services.store, self.app.bot, self._clock, tick_s=live_tick_s)
        Handlers(services, self.sender.wake).install(self.app)

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        if not await self._connect(stop):
            return
        async with self.app:  # initialized by _connect; shut down on the way out
            await self._register_commands()
            await self.app.start()
            await self._start_updates()
            log.info("telegram channel up (%s)", "webhook" if self._settings.telegram.webhook_url else "polling")
            tasks = [
                asyncio.create_task(self.sender.run(stop), name="telegram-outbox"),
                asyncio.create_task(self.live.run(stop), name="telegram-live"),
            ]
            if ready is not None:
                ready()
            try:
                await stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if self.app.updater is not None and self.app.updater.running:
                    await self.app.updater.stop()
                if self._webhook is not None:
                    await self._webhook.stop()
                await self.app.stop()

    async def _connect(self, stop: asyncio.Event) -> bool:
        """Reach Telegram (getMe). A rejected token is fatal, with a clear message; an unreachable server is
        retried with backoff while the engine keeps working. False when asked to stop meanwhile."""
        delay_s = 1.0
        warned_at: float | None = None
        while not stop.is_set():
            try:
                await self.app.initialize()
                await self._store.kv_set_if_changed(CHANNEL_PROBLEM_KEY, "")
                return True
            except InvalidToken as exc:
                raise ChannelRefused(
                    f"Telegram rejected the bot token in {BOT_TOKEN_ENV} ({redact(str(exc), [self._token])}); "
                    "get a new one from @BotFather"
                ) from None
            except (NetworkError, TimedOut) as exc:
                now = self._clock.now()
                if warned_at is None or now - warned_at >= UNREACHABLE_WARN_EVERY_S:
                    warned_at = now
                    await self._say_unreachable(redact(str(exc), [self._token]), now)
            waits = [asyncio.ensure_future(self._clock.sleep(delay_s)), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            delay_s = min(delay_s * 2, 60.0)
        return False

    async def _say_unreachable(self, reason: str, now: float) -> None:
        """Logged, and kept for `switchboard status`, at most once a minute; the retries go on."""
        log.warning("Telegram is unreachable (%s); still retrying, with backoff up to a minute", reason)
        try:
            await self._store.kv_set_if_changed(CHANNEL_PROBLEM_KEY, f"{now:.0f} Telegram is unreachable ({reason})")
        except Exception as exc:  # the warning above is what matters; status shows the last one it could write
            log.warning("could not record the channel's problem for status (%s)", type(exc).__name__)

    async def _register_commands(self) -> None:
        try:
            await self.app.bot.set_my_commands([BotCommand(name, what) for name, what in COMMANDS.items()])
        except Exception as exc:  # the menu is a convenience; the commands work without it
            log.warning("setMyCommands failed: %s", exc)

    async def _start_updates(self) -> None:
        updater = self.app.updater
        assert updater is not None
        telegram = self._settings.telegram
        if telegram.webhook_url:
            secret = telegram.webhook_secret.get_secret_value() if telegram.webhook_secret else ""
            self._webhook = WebhookServer(
                self.app.bot,
                self.app.update_queue,
                listen=telegram.webhook_listen,
                port=telegram.webhook_port,
                path=webhook_path(telegram.webhook_url),
                secret=secret,
            )
            self._webhook.start()
            try:
                await self.app.bot.set_webhook(
                    telegram.webhook_url, secret_token=secret, allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=False,
                )
            except BaseException:
                await self._webhook.stop()
                raise
            return
        try:  # a webhook left by an earlier deployment blocks getUpdates
            await self.app.bot.delete_webhook(drop_pending_updates=False)
        except Exception as exc:
            # Only the type: a Telegram error's text may quote the request. Polling says more if it is refused.
            log.warning("could not delete an earlier webhook (%s); polling may be refused", type(exc).__name__)
        await updater.start_polling(
            poll_interval=0.0,
            timeout=dtm.timedelta(seconds=self._poll_timeout_s),
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,  # a backlog from while we were down is handled, not dropped
        )


def _build_app(
    settings: Settings,
    token: str,
    request: BaseRequest | None,
    get_updates_request: BaseRequest | None,
    limiter_retries: int,
) -> TelegramApp:
    root = settings.telegram.api_base_url.rstrip("/")
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=limiter_retries))
        .concurrent_updates(False)  # one update at a time, in order: the conversation keeps its order
    )
    if request is not None:
        builder = builder.request(request)
    if get_updates_request is not None:
        builder = builder.get_updates_request(get_updates_request)
    return builder.build()
