"""LLM failover: before the first token the request is simply retried on the next
provider; after it, the partial reply goes back as context with an instruction to
continue (``continuation_context``), and only the continuation is emitted
(``RepeatFilter`` drops a restatement).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Never

from livekit.agents import APIConnectOptions, llm
from livekit.agents.llm import ChatChunk, ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from pipelines.providers.failover.chain import (
    INNER_CONN_OPTIONS,
    ChainFront,
    Link,
    MeasuredByAttempts,
    ProviderChain,
    front_conn_options,
)
from pipelines.providers.failover.watchdog import (
    Watchdog,
)

logger = logging.getLogger(__name__)

AnyLLM = llm.LLM[Any]

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off. Continue it exactly where it stopped, without "
    "repeating anything already said and without starting over."
)


def continuation_context(chat_ctx: ChatContext, said: str) -> ChatContext:
    """``chat_ctx`` plus the partial reply and an instruction to continue it."""
    ctx = chat_ctx.copy()
    ctx.add_message(role="assistant", content=said)
    ctx.add_message(role="system", content=CONTINUE_INSTRUCTION)
    return ctx


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _after_collapsed_prefix(raw: str, n: int) -> str:
    """What follows the first ``n`` characters of ``raw`` in whitespace-collapsed form."""
    count, in_space = 0, True
    for i, ch in enumerate(raw):
        if count >= n:
            return raw[i:]
        if ch.isspace():
            if not in_space:
                count += 1
            in_space = True
        else:
            count += 1
            in_space = False
    return ""


class RepeatFilter:
    """Passes a continuation through, minus a restatement of what was already said.

    Text is held only while it still matches the start of the already-said reply; once
    it diverges it is released whole, once it covers the whole reply the repeat is
    dropped. A space is put between the two parts when neither side has one."""

    def __init__(self, said: str) -> None:
        self._said = _collapsed(said)
        self._joins_word = bool(said) and not said[-1].isspace()
        self._held = ""
        self._deciding = bool(self._said)
        self._started = False

    def push(self, text: str) -> str:
        if not self._deciding:
            return self._out(text)
        self._held += text
        probe = _collapsed(self._held)
        if len(probe) < len(self._said) and self._said.startswith(probe):
            return ""
        self._deciding = False
        held, self._held = self._held, ""
        n = len(self._said)
        if probe.startswith(self._said) and not probe[n : n + 1].isalnum():
            held = _after_collapsed_prefix(held, n)
        return self._out(held)

    def finish(self) -> str:
        """Text still held when the continuation ended: a partial repeat, dropped."""
        self._held = ""
        return ""

    def _out(self, text: str) -> str:
        if not text:
            return ""
        if not self._started:
            self._started = True
            if self._joins_word and not text[0].isspace() and text[0] not in ".,;:!?":
                return " " + text
        return text


class FailoverLLM(ChainFront, llm.LLM[Never]):
    """LLM over a chain of allowed providers; a reply cut mid-way is continued."""

    def __init__(self, chain: ProviderChain[AnyLLM]) -> None:
        super().__init__()
        self.chain = chain
        self._follow_links()

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> FailoverLLMStream:
        return FailoverLLMStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=front_conn_options(conn_options),
            parallel_tool_calls=parallel_tool_calls,
            tool_choice=tool_choice,
            extra_kwargs=extra_kwargs,
        )

    def prewarm(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.chain.links[0].instance.prewarm(loop=loop)


class FailoverLLMStream(MeasuredByAttempts, llm.LLMStream):
    _llm_request_span_name = "llm_failover"
    _llm_attempt_span_name = None
    _genai_operation_name = None

    def __init__(
        self,
        failover: FailoverLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool],
        conn_options: APIConnectOptions,
        parallel_tool_calls: NotGivenOr[bool],
        tool_choice: NotGivenOr[ToolChoice],
        extra_kwargs: NotGivenOr[dict[str, Any]],
    ) -> None:
        super().__init__(failover, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._failover = failover
        self._parallel_tool_calls = parallel_tool_calls
        self._tool_choice = tool_choice
        self._extra_kwargs = extra_kwargs
        self.said = ""
        """Reply text emitted so far, across providers."""
        self._tool_calls_sent = False

    async def _run(self) -> None:
        await self._failover.chain.run(self._attempt)

    async def _attempt(self, link: Link[AnyLLM], wd: Watchdog) -> None:
        if self._tool_calls_sent:
            return  # the reply was complete: tool calls come last
        continuing = bool(self.said)
        ctx = continuation_context(self._chat_ctx, self.said) if continuing else self._chat_ctx
        repeat = RepeatFilter(self.said) if continuing else None
        wd.request()
        try:
            async with link.instance.chat(
                chat_ctx=ctx,
                tools=self._tools,
                conn_options=INNER_CONN_OPTIONS,
                parallel_tool_calls=self._parallel_tool_calls,
                tool_choice=self._tool_choice,
                extra_kwargs=self._extra_kwargs,
            ) as stream:
                async for chunk in stream:
                    wd.progress()
                    self._forward(chunk, repeat)
        except Exception:
            if self._tool_calls_sent:
                logger.warning("llm %s failed after its tool calls; reply kept", link.id)
                return
            raise
        wd.settle()

    def _forward(self, chunk: ChatChunk, repeat: RepeatFilter | None) -> None:
        delta = chunk.delta
        if delta is not None and delta.content and repeat is not None:
            content = repeat.push(delta.content)
            if not content and not delta.tool_calls:
                return
            delta = delta.model_copy(update={"content": content or None})
            chunk = chunk.model_copy(update={"delta": delta})
        if delta is not None:
            self.said += delta.content or ""
            self._tool_calls_sent = self._tool_calls_sent or bool(delta.tool_calls)
        self._event_ch.send_nowait(chunk)
