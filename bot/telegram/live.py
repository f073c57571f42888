"""What is happening now: the typing indicator while the persona thinks, and one progress card per long job,
edited in place at most every ``progress_edit_interval_s`` and only when its text changed (an identical edit
is an error at Telegram: "message is not modified").

Cards are ephemeral: their message ids live in memory. After a restart a running job gets a new card.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from telegram import Bot
from telegram.constants import ChatAction
from telegram.error import BadRequest, RetryAfter, TelegramError

from bot.console import CONSOLE_CHAT_ID
from bot.telegram import format as fmt
from engine.clock import Clock
from engine.models import Job, JobState
from engine.passes import Passes
from engine.schedule_times import in_quiet_hours, zone
from engine.settings import Settings
from engine.store import Store

log = logging.getLogger(__name__)

TYPING_EVERY_S = 4.0  # Telegram shows "typing" for about 5 s
NO_CARD_TYPES = frozenset({"chat", "review"})


@dataclass
class _Card:
    chat_id: int
    message_id: int
    text: str
    edited_at: float


class LiveActivity:
    def __init__(self, settings: Settings, store: Store, bot: Bot, clock: Clock, *, tick_s: float = 1.0) -> None:
        self._settings = settings
        self._store = store
        self._bot = bot
        self._clock = clock
        self._interval_s = settings.telegram.progress_edit_interval_s
        self._tick_s = min(tick_s, self._interval_s)
        self._typing_at: dict[int, float] = {}
        self._cards: dict[tuple[int, int], _Card] = {}  # (job id, chat id) -> card
        self._tz = zone(settings.pulse.timezone)
        self.passes = Passes()  # ticks of `run`: `passes.next_whole()` waits until it looked again

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.passes.begin()
            try:
                await self.tick()
            except Exception:
                log.exception("live activity tick failed")
            self.passes.end()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._tick_s)

    async def tick(self) -> None:
        active = await self._store.list_jobs(
            states=[JobState.QUEUED, JobState.RUNNING, JobState.REVIEWING], limit=1_000
        )
        await self._typing([j for j in active if j.type == "chat"])
        await self._progress([j for j in active if j.state == JobState.RUNNING and j.type not in NO_CARD_TYPES])

    # ---- typing -----------------------------------------------------------------------------------------

    async def _typing(self, chat_jobs: list[Job]) -> None:
        now = self._clock.now()
        chats = {self._chat(j)[0] for j in chat_jobs if j.chat_id is not None}
        for chat_id in chats:
            if now - self._typing_at.get(chat_id, 0.0) < TYPING_EVERY_S:
                continue
            self._typing_at[chat_id] = now
            with contextlib.suppress(TelegramError):
                await self._bot.send_chat_action(chat_id, ChatAction.TYPING)

    # ---- progress cards ---------------------------------------------------------------------------------

    async def _progress(self, running: list[Job]) -> None:
        now = self._clock.now()
        quiet = in_quiet_hours(self._settings.pulse.quiet_hours, now, self._tz)
        seen: set[tuple[int, int]] = set()
        for job in running:
            if now - (job.started_at or now) < self._interval_s:
                continue  # not a long job (yet)
            for chat_id in self._chat(job):
                seen.add((job.id, chat_id))
                if not quiet:
                    await self._show(job, chat_id, _card_text(job, now), now)
        for key in [k for k in self._cards if k not in seen]:
            await self._close(key, now)

    async def _show(self, job: Job, chat_id: int, text: str, now: float) -> None:
        card = self._cards.get((job.id, chat_id))
        try:
            if card is None:
                sent = await self._bot.send_message(chat_id, fmt.to_html(text))
                self._cards[(job.id, chat_id)] = _Card(chat_id, sent.message_id, text, now)
                return
            if text == card.text or now - card.edited_at < self._interval_s:
                return
            await self._bot.edit_message_text(fmt.to_html(text), chat_id=chat_id, message_id=card.message_id)
            card.text, card.edited_at = text, now
        except RetryAfter as exc:
            log.info("progress card deferred by a flood wait: %s", exc)
        except BadRequest as exc:
            if "not modified" in str(exc).lower() and card is not None:
                card.text = text
            else:
                log.warning("progress card for job %d: %s", job.id, exc)
        except TelegramError as exc:
            log.info("progress card for job %d not updated: %s", job.id, exc)

    async def _close(self, key: tuple[int, int], now: float) -> None:
        card = self._cards.pop(key)
        job = await self._store.get_job(key[0])
        state = job.state.value if job is not None else "gone"
        text = f"Job #{key[0]}: {state} (the notification follows)" if state != "running" else card.text
        if text == card.text:
            return
        with contextlib.suppress(TelegramError):
            await self._bot.edit_message_text(fmt.to_html(text), chat_id=card.chat_id, message_id=card.message_id)

    def _chat(self, job: Job) -> list[int]:
        if job.chat_id is None or job.chat_id == CONSOLE_CHAT_ID:
            return list(self._settings.telegram.operator_ids)
        return [job.chat_id]


def _card_text(job: Job, now: float) -> str:
    minutes = max(0.0, now - (job.started_at or now)) / 60
    progress = (job.progress or "working").strip()
    return f"⏳ Job #{job.id} running for {minutes:.0f} min: {job.title}\n\n{progress[:500]}"
