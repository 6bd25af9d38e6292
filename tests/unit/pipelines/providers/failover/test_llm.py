"""LLM failover: a stall before the first token is retried, a reply cut mid-way is
continued without repeating itself."""

from __future__ import annotations

import time

from pipelines.providers.failover import (
    CONTINUE_INSTRUCTION,
    FailoverLLM,
    RepeatFilter,
    SwitchEvent,
)
from tests.fakes import FakeLLM, collect_reply, make_chain


async def test_llm_stall_before_first_token_switches_within_the_deadline() -> None:
    a, b = FakeLLM("late", stall_after_tokens=0), FakeLLM("on time")
    events: list[SwitchEvent] = []
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.2, events=events))
    started = time.monotonic()
    assert await collect_reply(model) == "on time"
    assert 0.2 <= time.monotonic() - started < 0.5
    assert events[0].reason == "stall" and 0.2 <= events[0].switch_seconds < 0.35


async def test_llm_mid_reply_failure_continues_from_what_was_said() -> None:
    a = FakeLLM("One two three four.", fail_after_tokens=2)
    b = FakeLLM("three four.")
    assert await collect_reply(FailoverLLM(make_chain("llm", [a, b]))) == "One two three four."
    messages = b.contexts[0].messages()
    assert messages[-2].role == "assistant" and messages[-2].text_content == "One two"
    assert messages[-1].role == "system" and messages[-1].text_content == CONTINUE_INSTRUCTION


async def test_llm_continuation_that_restarts_the_reply_is_not_repeated() -> None:
    a = FakeLLM("One two three four.", stall_after_tokens=2)
    b = FakeLLM("One two three four.")
    model = FailoverLLM(make_chain("llm", [a, b], deadline=0.1))
    assert await collect_reply(model) == "One two three four."


def test_repeat_filter() -> None:
    f = RepeatFilter("Sure, I can")
    assert f.push("Sure,") == "" and f.push(" I") == "" and f.push(" can help") == " help"
    assert f.push(" you.") == " you."
    g = RepeatFilter("Sure, I can")
    assert g.push("help") == " help"
    h = RepeatFilter("Sure")
    assert h.push("Surely") == " Surely", "a repeat ends at a word boundary"
