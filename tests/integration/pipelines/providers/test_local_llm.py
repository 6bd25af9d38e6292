"""The offline LLM's ``voice-transcript`` handler on a real llama.cpp server (Gemma 3 270M):
one guarded sentence per turn, streamed through the worker's own client, with usage."""

from __future__ import annotations

from typing import Any

from livekit.agents import llm, utils

from pipelines.providers import ProviderSpec, build
from pipelines.providers.transcript_prompt import FALLBACK_LINES, first_sentence


async def _reply(model: llm.LLM[Any], ctx: llm.ChatContext) -> tuple[str, list[llm.ChatChunk]]:
    chunks = []
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    text = "".join(c.delta.content or "" for c in chunks if c.delta is not None)
    return text, chunks


async def test_each_turn_gets_one_sentence_that_is_never_the_last_one_again(
    llama_base_url: str,
) -> None:
    ctx = llm.ChatContext.empty()
    ctx.add_message(
        role="system",
        content="You are the booking desk of Riverside Tennis Club. Answer in one sentence.",
    )
    ctx.add_message(role="assistant", content="Riverside Tennis Club, how can I help?")
    async with utils.http_context.open():
        model = build(
            ProviderSpec(
                "llm",
                "local",
                "gemma-3-270m",
                base_url=llama_base_url,
                temperature=0.0,
                max_tokens=48,
            )
        )
        try:
            replies = []
            for said in ("Hi, can I book a court for Saturday morning?", "Saturday at nine."):
                ctx.add_message(role="user", content=said)
                text, chunks = await _reply(model, ctx)
                ctx.add_message(role="assistant", content=text)
                replies.append(text)
                assert text.strip() and first_sentence(text) == text.strip(), text
                usage = [c.usage for c in chunks if c.usage is not None]
                assert usage and usage[-1].prompt_tokens > 100, usage  # the example call is in
        finally:
            await model.aclose()
    assert replies[0] != replies[1]
    assert "Riverside Tennis Club, how can I help?" not in replies
    assert not all(r in FALLBACK_LINES for r in replies), replies
