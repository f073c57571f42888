"""The Telegram channel (python-telegram-bot 22): handlers in, outbox sender out, live typing and progress.

Modules: ``channel`` (the Application and its lifecycle), ``handlers`` (guard, text, commands, buttons),
``sender`` (the outbox, sent once), ``live`` (typing indicator, progress cards), ``format`` (Telegram's limits).
"""

from bot.telegram.channel import TelegramChannel, refusal
from engine.errors import ChannelRefused

__all__ = ["ChannelRefused", "TelegramChannel", "refusal"]
