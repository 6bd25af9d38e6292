"""A fake LLM that replies word by word and can fail or stall on cue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Never

from livekit.agents import APIConnectionError, APIConnectOptions, llm
from livekit.agents.llm import ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given


@dataclass
class _FakeLLMOptions:
    reply: str
    fake_exception: Exception | None
    fake_exception_count: int | None
    """How many calls raise ``fake_exception``; None: all of them."""
    fail_after_tokens: int | None
    """The reply breaks (connection reset) after this many words."""
    stall_after_tokens: int | None
    """The reply goes silent after this many words."""
    first_token_delay: float = 0.0
    """Seconds before the first word (a slow, not a stalled, provider)."""
    token_interval: float = 0.0
    """Seconds between words (the stream's own rate)."""


class FakeLLM(llm.LLM[Never]):
    """Replies ``reply``, one word per chunk; records each chat context in ``contexts``."""

    def __init__(
        self,
        reply: str = "Hello there.",
        *,
        fake_exception: Exception | None = None,
        fake_exception_count: int | None = None,
        fail_after_tokens: int | None = None,
        stall_after_tokens: int | None = None,
        first_token_delay: float = 0.0,
        token_interval: float = 0.0,
    ) -> None:
        super().__init__()
        self._opts = _FakeLLMOptions(
            reply=reply,
            fake_exception=fake_exception,
            fake_exception_count=fake_exception_count,
            fail_after_tokens=fail_after_tokens,
            stall_after_tokens=stall_after_tokens,
            first_token_delay=first_token_delay,
            token_interval=token_interval,
        )
        self.contexts: list[ChatContext] = []
        self.cancelled = 0
        """Streams cancelled while replying (the chain gave up on them)."""

    def update_options(
        self,
        *,
        reply: NotGivenOr[str] = NOT_GIVEN,
        fake_exception: NotGivenOr[Exception | None] = NOT_GIVEN,
        fake_exception_count: NotGivenOr[int | None] = NOT_GIVEN,
        fail_after_tokens: NotGivenOr[int | None] = NOT_GIVEN,
        stall_after_tokens: NotGivenOr[int | None] = NOT_GIVEN,
        first_token_delay: NotGivenOr[float] = NOT_GIVEN,
    ) -> None:
        if is_given(reply):
            self._opts.reply = reply
        if is_given(fake_exception):
            self._opts.fake_exception = fake_exception
        if is_given(fake_exception_count):
            self._opts.fake_exception_count = fake_exception_count
        if is_given(fail_after_tokens):
            self._opts.fail_after_tokens = fail_after_tokens
        if is_given(stall_after_tokens):
            self._opts.stall_after_tokens = stall_after_tokens
        if is_given(first_token_delay):
            self._opts.first_token_delay = first_token_delay

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> FakeLLMStream:
        self.contexts.append(chat_ctx)
        return FakeLLMStream(self, chat_ctx=chat_ctx, tools=[], conn_options=conn_options)


class FakeLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeLLM)
        opts = fake._opts
        if opts.fake_exception is not None and opts.fake_exception_count != 0:
            if opts.fake_exception_count is not None:
                opts.fake_exception_count -= 1
            raise opts.fake_exception
        try:
            await self._reply(opts)
        except asyncio.CancelledError:
            fake.cancelled += 1
            raise

    async def _reply(self, opts: _FakeLLMOptions) -> None:
        if opts.first_token_delay > 0:
            await asyncio.sleep(opts.first_token_delay)
        for i, word in enumerate(opts.reply.split(" ")):
            if opts.stall_after_tokens is not None and i >= opts.stall_after_tokens:
                await asyncio.sleep(3600)
            if opts.fail_after_tokens is not None and i >= opts.fail_after_tokens:
                raise APIConnectionError("connection reset")
            if i > 0 and opts.token_interval > 0:
                await asyncio.sleep(opts.token_interval)
            text = word if i == 0 else " " + word
            self._event_ch.send_nowait(
                llm.ChatChunk(id="x", delta=llm.ChoiceDelta(role="assistant", content=text))
            )


async def collect_reply(model: llm.LLM[Any], text: str = "Hi") -> str:
    """The reply text ``model`` streams to one user message ``text``."""
    ctx = ChatContext.empty()
    ctx.add_message(role="user", content=text)
    out = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                out += chunk.delta.content
    return out
