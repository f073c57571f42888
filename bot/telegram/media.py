"""Documents, photos and voice notes from the operator (the guard has already turned strangers away, so nothing
of theirs is ever downloaded): each becomes one call on the engine (``engine.media``) and one sentence back."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from telegram import Bot, Message
from telegram.error import TelegramError

from bot.services import Services
from engine.errors import OPERATOR_ERRORS, InvalidJob, describe_error
from engine.media import add_job_with_files, check_file, check_name, check_size, transcribe
from engine.text import clip

log = logging.getLogger(__name__)

NO_TRANSCRIBER = (
    "I cannot listen to voice notes here: no transcriber is configured ([media] transcriber in "
    "switchboard.toml). Please type it, and I will get on with it."
)
OTHER = "I read text messages, documents, photos and, with a transcriber configured, voice notes."


async def answer_media(services: Services, bot: Bot, message: Message) -> str:
    """What to tell the operator about the file they sent, after acting on it."""
    try:
        if message.document is not None or message.photo:
            return await _file(services, bot, message)
        if message.voice is not None or message.audio is not None:
            return await _voice(services, bot, message)
    except InvalidJob as exc:  # a file refused for its type or size, a voice note not understood
        return f"I did not keep that file: {exc}."
    except TelegramError as exc:
        log.warning("could not fetch the operator's file: %s", type(exc).__name__)
        return "I could not fetch that file from Telegram; please send it again."
    except OPERATOR_ERRORS as exc:
        return f"Cannot do that: {describe_error(exc)}"
    return OTHER


async def _download(services: Services, bot: Bot, file_id: str, announced: int | None) -> bytes:
    limit = int(services.settings.media.max_file_mb * 2**20)
    check_size(announced, limit)  # refused before a byte is downloaded
    handle = await bot.get_file(file_id)
    check_size(handle.file_size, limit)
    return bytes(await handle.download_as_bytearray())


async def _file(services: Services, bot: Bot, message: Message) -> str:
    if message.document is not None:
        document = message.document
        name, file_id, size = document.file_name or "document", document.file_id, document.file_size
    else:
        photo = message.photo[-1]  # the largest size Telegram made
        name, file_id, size = f"photo-{message.message_id}.jpg", photo.file_id, photo.file_size
    check_name(name)  # a type not accepted is refused before a byte is downloaded
    data = await _download(services, bot, file_id, size)
    safe = check_file(name, data, int(services.settings.media.max_file_mb * 2**20))
    caption, _ = clip(message.caption or "")
    job = await add_job_with_files(services.control, caption, [(safe, data)], chat_id=message.chat.id)
    return f"Saved {safe} in the folder of job #{job.id} and queued it ({job.type}): {job.title}"


async def _voice(services: Services, bot: Bot, message: Message) -> str:
    media = services.settings.media
    if not media.transcriber:
        return NO_TRANSCRIBER
    voice = message.voice or message.audio
    assert voice is not None
    data = await _download(services, bot, voice.file_id, voice.file_size)
    with tempfile.TemporaryDirectory(prefix="switchboard-voice-") as folder:
        path = Path(folder) / "voice.ogg"
        path.write_bytes(data)
        text = await transcribe(media.transcriber, path, media.transcriber_timeout_s)
    text, _ = clip(text)
    await services.control.chat(message.chat.id, text)
    return f"I heard: “{text[:300]}”"
