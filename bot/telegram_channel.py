"""Where the composition root finds the Telegram channel; the implementation lives in ``bot.telegram``."""

from bot.telegram import ChannelRefused, TelegramChannel, refusal

__all__ = ["ChannelRefused", "TelegramChannel", "refusal"]
