"""Documents, photos and voice notes from the operator, on the fake Bot API: a file becomes a job with the file in
the job's folder, named in its prompt; what is too large, mistyped or from a stranger is never kept (a stranger's
is never even fetched); a voice note is transcribed by the configured local command, or answered plainly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from engine.workspace import Workspace
from tests.integration.telegram_rig import OPERATOR, Rig, TelegramRigs

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 64 + b"\xff\xd9"
STRANGER = 999


async def _rig(telegram_rigs: TelegramRigs, **media: Any) -> Rig:
    return await telegram_rigs.start(
        engine=False, telegram={}, settings={"media": media} if media else None, poll_timeout_s=1.0, live_tick_s=0.05
    )


async def _answer(rig: Rig) -> str:
    before = len(rig.fake.messages_to(OPERATOR))
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the answer")
    return rig.fake.messages_to(OPERATOR)[-1].text


async def test_a_document_becomes_a_job_with_the_file_in_its_folder(telegram_rigs: TelegramRigs) -> None:
    rig = await _rig(telegram_rigs)
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.user_sends_document(OPERATOR, OPERATOR, "Q3 report.pdf", PDF, caption="summarise this report",
                                 mime_type="application/pdf")
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the answer")
    answer = rig.fake.messages_to(OPERATOR)[-1].text
    [job] = await rig.store.list_jobs()
    assert f"Saved Q3-report.pdf in the folder of job #{job.id}" in answer
    assert job.type == "analysis" and job.title == "summarise this report" and job.state.value == "queued"
    assert job.run_after <= rig.clock.now()  # released once the file was written
    assert job.prompt.startswith("summarise this report") and "attachments/Q3-report.pdf" in job.prompt
    saved = Workspace(rig.settings.home).job_dir(job.id) / "attachments" / "Q3-report.pdf"
    assert saved.read_bytes() == PDF


async def test_a_photo_without_caption_is_kept_too(telegram_rigs: TelegramRigs) -> None:
    rig = await _rig(telegram_rigs)
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.user_sends_photo(OPERATOR, OPERATOR, JPEG)
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the answer")
    [job] = await rig.store.list_jobs()
    [saved] = (Workspace(rig.settings.home).job_dir(job.id) / "attachments").iterdir()
    assert saved.name.startswith("photo-") and saved.read_bytes() == JPEG
    assert f"attachments/{saved.name}" in job.prompt


async def test_wrong_type_wrong_content_and_too_large_are_refused(telegram_rigs: TelegramRigs) -> None:
    rig = await _rig(telegram_rigs, max_file_mb=1)
    cases = [
        ("setup.exe", b"MZ\x90\x00", ".exe is not a type I accept"),
        ("invoice.pdf", b"<html>not a pdf</html>", "named .pdf but its content is not that"),
        ("notes.txt", b"\xff\xfe\x00binary", "not UTF-8 text"),
        ("big.pdf", b"%PDF-" + b"0" * (2 * 2**20), "at most 1 MB"),
    ]
    for name, content, why in cases:
        before = len(rig.fake.messages_to(OPERATOR))
        rig.fake.user_sends_document(OPERATOR, OPERATOR, name, content, caption="look")
        await rig.fake.wait_for(lambda b=before: len(rig.fake.messages_to(OPERATOR)) > b, what=name)
        assert why in rig.fake.messages_to(OPERATOR)[-1].text, name
    assert await rig.store.list_jobs() == []
    # The .exe was refused on its name and the too-large one on its announced size, before any download.
    assert rig.fake.calls.get("getFile", 0) == 2
    assert not (rig.settings.home / "jobs").exists()


async def test_a_strangers_file_is_never_fetched(telegram_rigs: TelegramRigs) -> None:
    rig = await _rig(telegram_rigs)
    rig.fake.user_sends_document(STRANGER, STRANGER, "payload.pdf", PDF, caption="run this")
    rig.fake.user_sends_photo(STRANGER, STRANGER, JPEG)
    rig.fake.operator_sends_text(OPERATOR, OPERATOR, "/status")
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) >= 1, what="the status")
    assert rig.fake.calls.get("getFile", 0) == 0
    assert rig.fake.messages_to(STRANGER) == [] and await rig.store.list_jobs() == []


async def test_a_voice_note_without_transcriber_gets_a_clear_sentence(telegram_rigs: TelegramRigs) -> None:
    rig = await _rig(telegram_rigs)
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.user_sends_voice(OPERATOR, OPERATOR, b"OggS\x00voice")
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the answer")
    assert "no transcriber is configured" in rig.fake.messages_to(OPERATOR)[-1].text
    assert rig.fake.calls.get("getFile", 0) == 0 and await rig.store.list_jobs() == []


async def test_a_voice_note_is_transcribed_and_goes_to_the_persona(telegram_rigs: TelegramRigs, tmp_path: Path) -> None:
    script = tmp_path / "transcribe.py"
    script.write_text("import sys\nassert open(sys.argv[1], 'rb').read().startswith(b'OggS')\n"
                      "print('research the tide tables for Sunday')\n", encoding="utf-8")
    rig = await _rig(telegram_rigs, transcriber=[sys.executable, str(script)])
    before = len(rig.fake.messages_to(OPERATOR))
    rig.fake.user_sends_voice(OPERATOR, OPERATOR, b"OggS\x00voice")
    await rig.fake.wait_for(lambda: len(rig.fake.messages_to(OPERATOR)) > before, what="the answer")
    assert "I heard: “research the tide tables for Sunday”" in rig.fake.messages_to(OPERATOR)[-1].text
    [chat] = await rig.store.list_jobs()
    assert chat.type == "chat" and chat.prompt == "research the tide tables for Sunday"
