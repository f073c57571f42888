"""The outbox sender: every message to the operator leaves through here, once.

Delivery contract, per outbox row:
- ``pending`` -> ``sending`` in its own transaction just before the Bot API call, -> ``sent`` with the Telegram
  message id after it. A transient error (network, 5xx, a flood wait the rate limiter gave up on) puts the row
  back to ``pending`` with a backoff (``outbox_mark_retry``); a permanent one (400 bad request, 403 blocked)
  fails it at once.
- A send that timed out *after the request went out* (a read or write timeout: Telegram may have accepted
  it and only the answer was late) may have arrived, and the Bot API offers no way to ask. Such a row is
  marked ``uncertain`` and is not sent again: at most one copy, perhaps none. ``switchboard stats`` counts
  these ("uncertain sends"), and the log names each row. A timeout before the request left (connect, pool)
  delivered nothing and is retried like any transient error.
- A row found ``sending`` at start belonged to a process that died mid-call, usually while the rate limiter
  was waiting out a flood wait (nothing was delivered). It is sent again. The only other window for a
  duplicate is a crash between Telegram accepting the request and the ``sent`` commit: milliseconds. There
  we prefer a rare repeat to a lost notification.

Ordering: rows go out by id, except the persona's turns. A reply (and the "queued" notices its action wrote)
waits until every earlier chat job of the same chat has finished, and turns are sent in job order, so a
message sent while earlier work runs is never answered out of order.

Quiet hours (``[pulse] quiet_hours``) hold non-urgent notifications; urgent ones and the conversation itself
(replies, queued notices, command answers) still go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
from pathlib import Path

import httpx
from telegram import Bot, InlineKeyboardMarkup, InputFile, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut

from bot.console import CONSOLE_CHAT_ID
from bot.telegram import format as fmt
from engine.clock import Clock
from engine.models import TERMINAL_STATES, JobState, OutboxMessage
from engine.passes import Passes
from engine.redaction import Redactor
from engine.schedule_times import in_quiet_hours, zone
from engine.settings import Settings
from engine.store import Store

log = logging.getLogger(__name__)

TURN_KINDS = frozenset({"chat_reply", "job_queued"})
INTERACTIVE_KINDS = TURN_KINDS | {"command"}
LONG_RESULT_CHARS = 3500
_ACTIVE_STATES = [s for s in JobState if s not in TERMINAL_STATES]


def retry_after_s(exc: RetryAfter) -> float:
    value = exc._retry_after  # a timedelta in PTB 22; the public property warns while int is deprecated
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class OutboxSender:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bot: Bot,
        clock: Clock,
        *,
        poll_s: float = 0.25,
        redactor: Redactor | None = None,
    ) -> None:
        self._settings = settings
        # The last exit: rows written outside the engine (pulse alerts, command answers) pass it here too.
        self._redact = redactor or Redactor.from_settings(settings)
        self._store = store
        self._bot = bot
        self._clock = clock
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._tz = zone(settings.pulse.timezone)
        self.passes = Passes()  # drain passes of `run`: `passes.next_whole()` waits until it looked again

    def wake(self) -> None:
        """Something was just queued (a command answer): look now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        recovered = await self._store.outbox_recover_sending()
        if recovered:
            log.warning("%d message(s) were interrupted mid-send by a previous process; sending again", len(recovered))
        while not stop.is_set():
            self.passes.begin()
            try:
                await self.drain_once()
            except Exception:  # the sender must outlive a bad moment (busy database, a bug in one message)
                log.exception("outbox drain failed")
            self.passes.end()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)

    async def drain_once(self) -> int:
        """Send what is due now. Returns the number of rows sent."""
        now = self._clock.now()
        if now < self._paused_until:
            return 0
        quiet = in_quiet_hours(self._settings.pulse.quiet_hours, now, self._tz)
        due = await self._store.outbox_due(limit=500 if quiet else 50)
        if quiet:
            due = [m for m in due if m.urgent or m.kind in INTERACTIVE_KINDS]
        sent = 0
        for message in await self._in_order(due):
            if self._clock.now() < self._paused_until:
                break
            sent += await self._send_row(message)
        return sent

    # ---- ordering ------------------------------------------------------------------------------------

    async def _in_order(self, due: list[OutboxMessage]) -> list[OutboxMessage]:
        turns: dict[int, int] = {}  # outbox id -> the chat job whose turn it belongs to
        for message in due:
            turn = await self._turn_of(message)
            if turn is not None:
                turns[message.id] = turn
        if not turns:
            return due
        active = await self._store.list_jobs(states=_ACTIVE_STATES, limit=10_000)
        active_chats = [(j.id, j.chat_id) for j in active if j.type == "chat"]
        ordered = sorted((m for m in due if m.id in turns), key=lambda m: (turns[m.id], m.id))
        ready: list[OutboxMessage] = []
        blocked_chats: set[int | None] = set()
        for message in ordered:
            turn = turns[message.id]
            earlier_running = any(cid == message.chat_id and jid < turn for jid, cid in active_chats)
            if message.chat_id in blocked_chats or earlier_running:
                blocked_chats.add(message.chat_id)  # later turns of this chat wait too
                continue
            ready.append(message)
        # Other rows keep their places; the turns fill the places turns had, in job order.
        turns_in_order = iter(ready)
        result: list[OutboxMessage] = []
        for message in due:
            if message.id not in turns:
                result.append(message)
            elif (turn_row := next(turns_in_order, None)) is not None:
                result.append(turn_row)
        return result

    async def _turn_of(self, message: OutboxMessage) -> int | None:
        if message.kind not in TURN_KINDS or message.job_id is None:
            return None
        if message.kind == "chat_reply":
            return message.job_id
        job = await self._store.get_job(message.job_id)
        if job is None or job.parent_id is None:
            return None
        parent = await self._store.get_job(job.parent_id)
        return parent.id if parent is not None and parent.type == "chat" else None

    # ---- one row -------------------------------------------------------------------------------------

    async def _send_row(self, message: OutboxMessage) -> int:
        if not await self._store.outbox_claim(message.id):
            return 0
        try:
            first_id = await self._deliver(message)
        except RetryAfter as exc:
            wait_s = retry_after_s(exc)
            self._paused_until = self._clock.now() + wait_s
            log.warning("flood wait of %.0f s; outbox row %d rescheduled", wait_s, message.id)
            await self._store.outbox_mark_retry(message.id, wait_s, f"flood wait {wait_s:.0f} s")
            return 0
        except (BadRequest, Forbidden, InvalidToken) as exc:
            log.error("outbox row %d (%s) refused by Telegram: %s", message.id, message.kind, exc)
            await self._store.outbox_mark_retry(message.id, 0, f"refused: {exc}", give_up_after=1)
            return 0
        except (TelegramError, OSError) as exc:  # network trouble, timeouts, 5xx
            if _may_have_arrived(exc):
                log.warning("outbox row %d (%s): timed out after sending; it may have arrived, so it is not sent "
                            "again (counted as an uncertain send)", message.id, message.kind)
                await self._store.outbox_mark_uncertain(message.id, f"timed out after sending: {exc}")
                return 0
            delay_s = min(300.0, 2.0 ** (message.attempts + 1))
            log.warning("outbox row %d: %s; retrying in %.0f s", message.id, exc, delay_s)
            await self._store.outbox_mark_retry(message.id, delay_s, f"transient: {exc}")
            return 0
        except BaseException:
            # A bug or a cancellation: give the row back rather than leave it 'sending'.
            try:
                await asyncio.shield(self._store.outbox_mark_retry(message.id, 5.0, "interrupted"))
            except Exception as exc:
                log.warning("outbox row %d: could not give it back after an interruption (%s); it stays 'sending' "
                            "until the next sender start recovers it", message.id, type(exc).__name__)
            raise
        await self._store.outbox_mark_sent(message.id, first_id)
        return 1

    def _recipients(self, message: OutboxMessage) -> list[int]:
        if message.chat_id is None or message.chat_id == CONSOLE_CHAT_ID:
            return list(self._settings.telegram.operator_ids)
        return [message.chat_id]

    async def _deliver(self, message: OutboxMessage) -> int | None:
        first: int | None = None
        for chat_id in self._recipients(message):
            sent = await self._deliver_to(chat_id, message)
            first = first if first is not None else sent
        return first

    async def _deliver_to(self, chat_id: int, message: OutboxMessage) -> int | None:
        message = message.model_copy(update={"text": self._redact(message.text)})
        payload = message.payload
        markup = fmt.keyboard(payload.get("buttons"))
        if payload.get("chart") == "stats":
            return await self._send_stats(chat_id, message, float(payload.get("since", 0.0)))
        if payload.get("photo_path"):
            return await self._send_saved_chart(chat_id, message, Path(str(payload["photo_path"])))
        document = await self._long_result(message)
        sent = await self._send_text(chat_id, message.text, message.kind, markup)
        if document is not None:
            name, content = document
            await self._bot.send_document(
                chat_id, InputFile(content, filename=name), caption=f"Full result of job #{message.job_id}"
            )
        for name, content in await self._work_documents(message):
            await self._bot.send_document(
                chat_id, InputFile(content, filename=name), caption=f"{name} of job #{message.job_id}"
            )
        return sent[0].message_id if sent else None

    async def _work_documents(self, message: OutboxMessage) -> list[tuple[str, bytes]]:
        """A finished job's work on a project's folder: its full diff and test log, as the engine wrote them
        into its job folder (any other path in a payload is ignored)."""
        if message.kind != "job_done" or message.job_id is None:
            return []
        folder = (self._settings.home / "jobs" / str(message.job_id)).resolve()
        found = []
        for raw in message.payload.get("documents") or []:
            path = Path(str(raw))
            if path.parent.resolve() != folder:
                continue
            text = await asyncio.to_thread(_read_text, path)
            if text:
                found.append((path.name, self._redact(text).encode("utf-8")))
        return found

    async def _send_text(
        self, chat_id: int, text: str, kind: str, markup: InlineKeyboardMarkup | None = None
    ) -> list[Message]:
        chunks = fmt.split_text(text)
        sent: list[Message] = []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            sent.append(
                await self._bot.send_message(
                    chat_id,
                    fmt.to_html(chunk, headline=index == 0 and fmt.wants_headline(kind)),
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup if last else None,
                )
            )
        return sent

    async def _long_result(self, message: OutboxMessage) -> tuple[str, bytes] | None:
        """A finished job whose result is too long for a message: its full text, as result.md."""
        if message.kind != "job_done" or message.job_id is None:
            return None
        if int(message.payload.get("result_chars", 0)) <= LONG_RESULT_CHARS:
            return None
        job = await self._store.get_job(message.job_id)
        if job is None:
            return None
        text = job.result_text
        if not text and job.result_path:
            text = await asyncio.to_thread(_read_text, Path(job.result_path))
        if not text:
            return None
        return f"job-{job.id}-result.md", self._redact(text).encode("utf-8")

    async def _send_stats(self, chat_id: int, message: OutboxMessage, since: float) -> int | None:
        from bot import charts  # matplotlib (numpy, fonts): paid by the first chart, not by every start

        stats = await self._store.stats(since)
        png = await asyncio.to_thread(charts.stats_chart_png, stats)
        caption = message.text if fmt.utf16_len(message.text) <= fmt.MAX_CAPTION_UTF16 else None
        photo = await self._bot.send_photo(
            chat_id,
            InputFile(png, filename="stats.png"),
            caption=fmt.to_html(caption) if caption else None,
            parse_mode=ParseMode.HTML if caption else None,
        )
        if caption is None:
            await self._send_text(chat_id, message.text, message.kind)
        return photo.message_id


    async def _send_saved_chart(self, chat_id: int, message: OutboxMessage, path: Path) -> int | None:
        """A message with a chart saved on disk (a drill's report): the picture, then the text. A chart that is
        gone by now leaves the text alone."""
        png = await asyncio.to_thread(_read_bytes, path)
        if png is not None:
            await self._bot.send_photo(chat_id, InputFile(png, filename=path.name))
        sent = await self._send_text(chat_id, message.text, message.kind)
        return sent[0].message_id if sent else None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _may_have_arrived(exc: BaseException) -> bool:
    """A timeout once the request was (being) sent: Telegram may have accepted it. PTB raises ``TimedOut``
    from httpx's exception; a connect or pool timeout means nothing left this process."""
    return isinstance(exc, TimedOut) and isinstance(exc.__cause__, (httpx.ReadTimeout, httpx.WriteTimeout))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
