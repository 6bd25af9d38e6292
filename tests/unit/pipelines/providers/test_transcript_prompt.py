"""The offline LLM's prompt (an example call for the agent's role) and its reply guard."""

from __future__ import annotations

import pytest

from pipelines.providers.transcript_prompt import (
    FALLBACK_LINES,
    example_exchanges,
    first_sentence,
    guard_reply,
    loops,
    persona,
    render_transcript,
    sentence_complete,
)


@pytest.mark.parametrize(
    ("prompt", "first", "role", "business"),
    [
        (
            "You are the concierge of Hotel Lumen. Help guests with their stay.",
            "Hotel Lumen, good evening.",
            "the concierge",
            "Hotel Lumen",
        ),
        (
            "You are Max, calling from Bright Energy about a meter reading.",
            None,
            "Max",
            "Bright Energy",
        ),
        ("You answer calls for Oak Street Garage.", "Hello?", None, "Oak Street Garage"),
        ("Be brief and kind.", None, None, None),
    ],
)
def test_persona_comes_from_the_agents_own_words(
    prompt: str, first: str | None, role: str | None, business: str | None
) -> None:
    p = persona(prompt, first)
    assert (p.role, p.business) == (role, business)


def test_the_examples_are_written_for_the_role_and_the_call_follows() -> None:
    messages = [
        {"role": "system", "content": "You are the concierge of Hotel Lumen.\nBe warm."},
        {"role": "assistant", "content": "Hotel Lumen, good evening."},
        {"role": "user", "content": [{"type": "text", "text": "Is the pool open?"}]},
        {"role": "tool", "content": "ignored"},
    ]
    prompt = render_transcript(messages)
    lines = prompt.splitlines()
    assert lines[0] == "You are the concierge of Hotel Lumen. Be warm."
    assert "Agent: Hello, this is the concierge at Hotel Lumen; how can I help you today?" in lines
    examples = [line for line in lines if line.startswith(("Caller:", "Agent:"))]
    assert len(examples) == 2 * 3 + 3  # three example exchanges, then the call to "Agent:"
    assert lines[-4:] == [
        "Transcript of a phone call.",
        "Agent: Hotel Lumen, good evening.",
        "Caller: Is the pool open?",
        "Agent:",
    ]
    # every example reply takes up a word of its caller's line
    for caller, agent in example_exchanges(persona("You are the concierge of Hotel Lumen.", None)):
        assert set(caller.lower().split()) & set(agent.lower().replace(";", "").split())


def test_a_reply_is_its_first_sentence() -> None:
    assert first_sentence("Sure. I can book that for you. Anything else?") == (
        "Sure. I can book that for you."
    )
    assert first_sentence("What day suits you? We open at nine.") == "What day suits you?"
    assert first_sentence("no end mark at all") == "no end mark at all"
    assert first_sentence("We open at 10 a.m. tomorrow. Bye.") == "We open at 10 a.m. tomorrow."
    assert not sentence_complete("We open at 10 a.")
    assert not sentence_complete("Sure.") and sentence_complete("Sure, what day suits you? We")


def test_the_guard_replaces_empty_looping_and_repeated_replies() -> None:
    assert guard_reply("Yes, we open at nine tomorrow.", []) == "Yes, we open at nine tomorrow."
    assert guard_reply("  ", []) == FALLBACK_LINES[0]
    assert guard_reply("the the the the", []) == FALLBACK_LINES[0]
    assert loops(["i", "can", "help", "i", "can", "help"])
    assert not loops(["i", "can", "help", "you"])
    before = ["Thanks for calling.", "Yes, we open at nine tomorrow."]
    assert guard_reply("yes we open at nine tomorrow", before) == FALLBACK_LINES[0]
    # never the same fallback twice running
    assert guard_reply("", [FALLBACK_LINES[0]]) == FALLBACK_LINES[1]
    assert guard_reply("", [FALLBACK_LINES[1]]) == FALLBACK_LINES[0]
