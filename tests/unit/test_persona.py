from __future__ import annotations

import json

import pytest

from engine.persona import EnqueueAction, NoAction, parse_persona_reply


def _block(data: object) -> str:
    return f"```json\n{json.dumps(data)}\n```"


GOOD = {"action": "enqueue", "type": "research", "title": "Compare VPS hosts", "prompt": "Compare three hosts."}


# --- Persona actions ----------------------------------------------------------------------------------------


def test_valid_enqueue_is_parsed_and_removed_from_the_prose() -> None:
    reply = f"Queued a research job for that.\n\n{_block(GOOD)}\n\nAnything else?"
    prose, action, error = parse_persona_reply(reply)
    assert error is None
    assert isinstance(action, EnqueueAction)
    # No priority given: the operator's lane (engine.persona_actions.lane), not "normal" as before issue 15.
    assert (action.type, action.title, action.priority, action.project) == (
        "research", "Compare VPS hosts", None, None,
    )
    assert prose == "Queued a research job for that.\n\nAnything else?"


def test_no_action() -> None:
    prose, action, error = parse_persona_reply('Fine, nothing to queue.\n```json\n{"action": "none"}\n```')
    assert (prose, error) == ("Fine, nothing to queue.", None)
    assert isinstance(action, NoAction)


def test_plain_answer_has_no_action_and_no_error() -> None:
    assert parse_persona_reply("  The capital of France is Paris.  ") == ("The capital of France is Paris.", None, None)


def test_other_code_blocks_stay_in_the_prose() -> None:
    reply = (
        'Try this:\n```python\nprint("action")\n```\nAnd the data:\n```json\n{"transaction": 1}\n```\n'
        '```\n{"action_items": [], "note": "an action"}\n```\n' + _block(GOOD)
    )
    prose, action, error = parse_persona_reply(reply)
    assert error is None and isinstance(action, EnqueueAction)
    assert 'print("action")' in prose and '{"transaction": 1}' in prose and '"action_items"' in prose
    assert "Compare three hosts" not in prose


def test_unlabelled_fence_and_bare_object_are_accepted() -> None:
    _, action, error = parse_persona_reply("Okay.\n```\n" + json.dumps(GOOD) + "\n```")
    assert error is None and isinstance(action, EnqueueAction)
    prose, action, error = parse_persona_reply(json.dumps(GOOD))
    assert (prose, error) == ("", None) and isinstance(action, EnqueueAction)


def test_fields_are_normalised() -> None:
    data = {**GOOD, "type": " Coding ", "priority": "HIGH", "project": "  ", "title": "  t  ", "extra": [1]}
    _, action, error = parse_persona_reply(_block(data))
    assert error is None and isinstance(action, EnqueueAction)
    assert (action.type, action.priority, action.project, action.title) == ("coding", "high", None, "t")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"type": "hacking"}, "unknown job type 'hacking'"),
        ({"type": "chat"}, "unknown job type 'chat'"),
        ({"type": 7}, "type"),
        ({"title": 12}, "title"),
        ({"title": "   "}, "title"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a"]}, "prompt"),
        ({"priority": "urgent"}, "priority"),
        ({"project": {"name": "x"}}, "project"),
        ({"title": "x" * 5000}, "title"),
        ({"action": "delete"}, "delete"),
    ],
)
def test_wrong_fields_are_reported_and_the_prose_kept(change: dict[str, object], fragment: str) -> None:
    prose, action, error = parse_persona_reply("I'll queue it.\n" + _block({**GOOD, **change}))
    assert action is None
    assert error is not None and fragment in error and error.startswith("invalid action")
    assert prose == "I'll queue it."


def test_missing_fields_are_reported() -> None:
    _, action, error = parse_persona_reply(_block({"action": "enqueue"}))
    assert action is None and error is not None
    assert "type" in error and "title" in error and "prompt" in error


def test_configured_job_types_are_honoured() -> None:
    _, action, error = parse_persona_reply(_block({**GOOD, "type": "podcast"}), job_types=["podcast", "chat"])
    assert error is None and isinstance(action, EnqueueAction) and action.type == "podcast"
    _, action, error = parse_persona_reply(_block(GOOD), job_types=["podcast"])
    assert action is None and error is not None and "podcast" in error


@pytest.mark.parametrize(
    "body",
    [
        '{"action": "enqueue", "type": "research",}',
        "{'action': 'none'}",
        '{"action": "enqueue" "type"}',
        "action: none",
    ],
)
def test_invalid_json_is_an_error_not_an_exception(body: str) -> None:
    prose, action, error = parse_persona_reply(f"Here you go.\n```json\n{body}\n```\nDone.")
    assert action is None and error is not None and "JSON" in error
    assert prose == "Here you go.\n\nDone."


def test_non_object_json_is_an_error() -> None:
    _, action, error = parse_persona_reply('```json\n[{"action": "none"}]\n```')
    assert action is None and error == "action block must be a JSON object, not list"


def test_two_action_blocks_are_refused_but_the_prose_kept() -> None:
    reply = f"Two things.\n{_block(GOOD)}\nand\n{_block({**GOOD, 'type': 'writing'})}"
    prose, action, error = parse_persona_reply(reply)
    assert action is None and error is not None and "2 action blocks" in error
    assert prose == "Two things.\n\nand"


def test_unterminated_block_from_a_cut_off_reply() -> None:
    prose, action, error = parse_persona_reply('On it.\n```json\n{"action": "enqueue", "type": "res')
    assert prose == "On it." and action is None and error is not None


def test_unterminated_but_complete_block_is_still_used() -> None:
    prose, action, error = parse_persona_reply("On it.\n```json\n" + json.dumps(GOOD))
    assert prose == "On it." and error is None and isinstance(action, EnqueueAction)


def test_deeply_nested_braces_do_not_blow_the_stack() -> None:
    nested = "[" * 50_000 + "]" * 50_000
    body = '{"action": "enqueue", "x": ' + nested[:20_000] + nested[-20_000:] + "}"
    prose, action, error = parse_persona_reply("Nested.\n```json\n" + body + "\n```")
    assert prose == "Nested." and action is None and error is not None
    prose, action, error = parse_persona_reply('{"action": ' + "{" * 10_000 + "}" * 10_000 + "}")
    assert action is None and error is not None


def test_huge_text_keeps_all_its_prose_and_stays_fast() -> None:
    prose_in = ("word " * 200_000).strip()
    prose, action, error = parse_persona_reply(prose_in + "\n" + _block(GOOD))
    assert prose == prose_in and error is None and isinstance(action, EnqueueAction)


def test_many_unclosed_fences_are_linear() -> None:
    reply = "```json\n" * 100_000
    _, action, error = parse_persona_reply(reply + '{"action": "none"}')
    assert action is None and error is not None


def test_huge_action_block_is_refused() -> None:
    data = {**GOOD, "prompt": "x" * 200_000}
    prose, action, error = parse_persona_reply("Big one.\n" + _block(data))
    assert prose == "Big one." and action is None and error is not None and "too large" in error


def test_errors_are_short_and_do_not_echo_the_input() -> None:
    data = {**GOOD, "type": "t" * 10_000, "title": 1, "prompt": 2, "priority": 3, "project": 4}
    _, _, error = parse_persona_reply(_block(data))
    assert error is not None and len(error) <= 400


def test_non_text_input_is_an_error() -> None:
    assert parse_persona_reply(None)[2] is not None  # type: ignore[arg-type]
