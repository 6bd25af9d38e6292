"""Agent tools on a call: :func:`build_function_tools` turns the plan's ``ToolPlan`` entries
(parsed by ``worker.config.tools``) into livekit raw function tools.

A webhook tool call POSTs ``{call_id, agent_id, tool, arguments, metadata}`` to the
tool's URL, Standard-Webhooks-signed like lifecycle webhooks, within the tool's
timeout; the JSON reply goes back to the LLM. Failures (timeout, network, non-2xx) come
back as ``ToolError`` so the agent can tell the caller, never as a crash.

Built-ins act on the call through callbacks in :class:`ToolCallContext`, so they can be
tested without a room: ``end_call`` (``hangup``), ``transfer_call`` (``transfer``, see
:func:`sip_transfer`; the LLM picks among the configured destinations by label),
``send_dtmf`` (``publish_dtmf``, see :func:`room_dtmf`), ``collect_digits``
(``collect_digits``, see ``worker.call.telephony.CallerDigits``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from livekit.agents.llm import RawFunctionTool, StopResponse, ToolError, function_tool

from pipelines.errors import ConfigError
from worker.call.telephony import (
    COLLECT_TIMEOUT_SECONDS,
    DTMF_CODES,
    MAX_COLLECT_SECONDS,
    MAX_DIGITS,
    TransferFailed,
)
from worker.config import (
    BUILTINS,
    ToolPlan,
    WarmTransferOptions,
    parse_warm_transfer,
    pick_destination,
    transfer_destinations,
)
from worker.webhooks import post_signed

if TYPE_CHECKING:
    from livekit import api, rtc

logger = logging.getLogger(__name__)


MAX_REPLY_CHARS = 8000
"""Longer tool replies are cut: they go into the LLM context on every following turn."""
DTMF_GAP_SECONDS = 0.3


class EventSink(Protocol):
    """Where tool outcomes go for the call report; ``CallRecorder.add_event`` fits."""

    def __call__(self, type: str, /, **data: Any) -> object: ...


@dataclass(frozen=True, slots=True)
class ToolCallContext:
    """What a tool may know and do about the call it runs in."""

    call_id: str
    agent_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Sent with every webhook tool call (the call's metadata after pre-call merges)."""
    hangup: Callable[[str], Awaitable[None]] | None = None
    """``hangup(goodbye)``: say the goodbye, then end the call. Runs inside the tool call,
    so it must not wait for the speech of the current turn (schedule, don't await it)."""
    transfer: Callable[[str], Awaitable[None]] | None = None
    """``transfer(to)``: SIP-transfer the caller (see :func:`sip_transfer`); raises on failure."""
    publish_dtmf: Callable[[int, str], Awaitable[None]] | None = None
    """``publish_dtmf(code, digit)`` for one key (see :func:`room_dtmf`)."""
    collect_digits: Callable[..., Awaitable[tuple[str, str]]] | None = None
    """``collect_digits(max_digits=, terminator=, timeout=)`` -> ``(digits, why)``: the
    caller's keys (``CallerDigits.collect``)."""
    record_event: EventSink | None = None
    dtmf_gap_seconds: float = DTMF_GAP_SECONDS
    warm_transfer: Callable[[WarmTransferOptions, str], Awaitable[str | None]] | None = None
    """``warm_transfer(options, summary)`` (``worker.call.telephony``): None once the caller
    is bridged, else what the LLM is told (nobody took the call)."""


def sip_transfer(
    lkapi: api.LiveKitAPI,
    *,
    room_name: str,
    participant_identity: str,
    play_dialtone: bool = False,
) -> Callable[[str], Awaitable[None]]:
    """A ``ToolCallContext.transfer`` that calls ``SipService.transfer_sip_participant``."""
    from livekit import api as lk_api
    from livekit.protocol import sip as sip_proto

    async def transfer(to: str) -> None:
        response = await lkapi.sip.transfer_sip_participant(
            lk_api.TransferSIPParticipantRequest(
                room_name=room_name,
                participant_identity=participant_identity,
                transfer_to=to,
                play_dialtone=play_dialtone,
            )
        )
        # servers before transfer status report nothing (ONGOING = 0): only FAILED is final
        if response.status == sip_proto.STS_TRANSFER_FAILED:
            sip_code = response.sip_status.code if response.HasField("sip_status") else None
            raise RuntimeError(f"transfer failed (SIP status {sip_code})")

    return transfer


def room_dtmf(room: rtc.Room) -> Callable[[int, str], Awaitable[None]]:
    """A ``ToolCallContext.publish_dtmf`` that publishes on the room's local participant."""

    async def publish(code: int, digit: str) -> None:
        await room.local_participant.publish_dtmf(code=code, digit=digit)

    return publish


ToolCallable = Callable[[dict[str, Any]], Awaitable[Any]]


def build_function_tools(
    tools: Sequence[ToolPlan],
    *,
    call_context: ToolCallContext,
    http: httpx.AsyncClient,
    secret: str | None,
) -> list[RawFunctionTool[Any, Any]]:
    """LLM function tools for exactly ``tools``; ``secret`` signs webhook tool calls.

    A built-in whose callback is missing from ``call_context`` (no SIP participant to
    transfer, no room for DTMF) is left out so the LLM never offers what it cannot do.
    """
    built: list[RawFunctionTool[Any, Any]] = []
    for plan in tools:
        handler: ToolCallable | None
        if plan.builtin is None:
            if not plan.url:
                raise ConfigError(f"tool {plan.name!r} has no url", field="tools.url")
            handler = _webhook_handler(plan, call_context, http, secret)
        elif plan.builtin in BUILTINS:
            handler = _builtin_handler(plan, call_context)
            if handler is None:
                logger.warning(
                    "built-in tool %s left out: this call has no way to run it", plan.name
                )
                continue
        else:
            raise ConfigError(f"unknown built-in {plan.builtin!r}", field="tools.builtin")
        schema = {"name": plan.name, "description": plan.description, "parameters": plan.parameters}
        built.append(function_tool(_bind(handler), raw_schema=schema))
    return built


def _bind(handler: ToolCallable) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    # livekit passes the LLM's arguments as the ``raw_arguments`` keyword
    async def raw_tool(raw_arguments: dict[str, Any]) -> Any:
        return await handler(raw_arguments)

    return raw_tool


def _record(ctx: ToolCallContext, **data: Any) -> None:
    if ctx.record_event is not None:
        try:
            ctx.record_event("tool_call", **data)
        except Exception:
            logger.exception("recording a tool event failed")


def _webhook_handler(
    plan: ToolPlan, ctx: ToolCallContext, http: httpx.AsyncClient, secret: str | None
) -> ToolCallable:
    assert plan.url is not None
    url = plan.url

    async def call(arguments: dict[str, Any]) -> Any:
        payload = {
            "call_id": ctx.call_id,
            "agent_id": ctx.agent_id,
            "tool": plan.name,
            "arguments": arguments,
            "metadata": dict(ctx.metadata),
        }
        started = time.monotonic()

        def done(ok: bool, status: int | None = None, error: str | None = None) -> None:
            _record(
                ctx,
                tool=plan.name,
                ok=ok,
                status_code=status,
                error=error,
                duration_ms=round((time.monotonic() - started) * 1000),
                arguments=arguments,
            )

        try:
            # httpx timeouts are per phase; the tool's timeout bounds the whole call
            async with asyncio.timeout(plan.timeout_seconds):
                response = await post_signed(
                    url, payload, secret, timeout=plan.timeout_seconds, client=http
                )
        except (TimeoutError, httpx.TimeoutException):
            done(False, error="timeout")
            raise ToolError(
                f"The {plan.name} tool did not answer within {plan.timeout_seconds:g} seconds."
            ) from None
        except httpx.HTTPError as e:
            done(False, error=type(e).__name__)
            raise ToolError(f"The {plan.name} tool could not be reached.") from None
        if not 200 <= response.status_code < 300:
            done(False, response.status_code, f"HTTP {response.status_code}")
            raise ToolError(f"The {plan.name} tool failed (HTTP {response.status_code}).")
        done(True, response.status_code)
        try:
            reply: str = json.dumps(response.json(), ensure_ascii=False)
        except ValueError:
            reply = response.text
        if len(reply) > MAX_REPLY_CHARS:
            reply = reply[:MAX_REPLY_CHARS] + " …[truncated]"
        return reply

    return call


def _builtin_handler(plan: ToolPlan, ctx: ToolCallContext) -> ToolCallable | None:
    if plan.builtin == "end_call":
        hangup = ctx.hangup
        if hangup is None:
            return None

        async def end_call(arguments: dict[str, Any]) -> Any:
            goodbye = plan.options.get("goodbye") or arguments.get("goodbye") or "Goodbye!"
            _record(ctx, tool=plan.name, ok=True, goodbye=str(goodbye))
            await hangup(str(goodbye))
            # the goodbye is the last thing said: no LLM reply after this tool
            raise StopResponse()

        return end_call

    if plan.builtin == "transfer_call":
        transfer = ctx.transfer
        if transfer is None:
            return None
        destinations = transfer_destinations(plan.options, where=plan.name)

        async def transfer_call(arguments: dict[str, Any]) -> Any:
            chosen = pick_destination(destinations, arguments.get("destination"))
            if chosen is None:
                labels = ", ".join(d.label or d.to for d in destinations)
                raise ToolError(f"destination must be one of: {labels}.")
            to = chosen.uri
            try:
                await transfer(to)
            except Exception as e:
                _record(ctx, tool=plan.name, ok=False, to=to, error=str(e))
                reason = f": {e.reason}" if isinstance(e, TransferFailed) and e.reason else ""
                raise ToolError(f"The transfer did not go through{reason}.") from None
            _record(ctx, tool=plan.name, ok=True, to=to)
            raise StopResponse()

        return transfer_call

    if plan.builtin == "collect_digits":
        return _collect_digits_handler(plan, ctx)
    if plan.builtin == "warm_transfer":
        return _warm_transfer_handler(plan, ctx)

    publish = ctx.publish_dtmf
    if publish is None:
        return None

    async def send_dtmf(arguments: dict[str, Any]) -> Any:
        digits = str(arguments.get("digits", "")).upper()
        if not digits or any(d not in DTMF_CODES for d in digits):
            raise ToolError("digits must be keys 0-9, *, #, A-D.")
        for i, digit in enumerate(digits):
            if i and ctx.dtmf_gap_seconds > 0:
                await asyncio.sleep(ctx.dtmf_gap_seconds)
            try:
                await publish(DTMF_CODES[digit], digit)
            except Exception as e:
                _record(ctx, tool=plan.name, ok=False, digits=digits, error=str(e))
                raise ToolError(f"Pressing {digit} failed.") from None
            if ctx.record_event is not None:
                ctx.record_event("dtmf", direction="sent", digit=digit)
        _record(ctx, tool=plan.name, ok=True, digits=digits)
        return f"Pressed {digits}."

    return send_dtmf


def _collect_digits_handler(plan: ToolPlan, ctx: ToolCallContext) -> ToolCallable | None:
    collect = ctx.collect_digits
    if collect is None:
        return None

    async def collect_digits(arguments: dict[str, Any]) -> Any:
        # the tool's options pin what the LLM may otherwise choose
        given = {**arguments, **plan.options}
        max_digits = given.get("max_digits")
        terminator = given.get("terminator")
        timeout = given.get("timeout_seconds", COLLECT_TIMEOUT_SECONDS)
        if max_digits is not None and (
            isinstance(max_digits, bool)
            or not isinstance(max_digits, int)
            or not 0 < max_digits <= MAX_DIGITS
        ):
            raise ToolError(f"max_digits must be a whole number from 1 to {MAX_DIGITS}.")
        if terminator is not None and terminator not in DTMF_CODES:
            raise ToolError("terminator must be one key: 0-9, *, #, A-D.")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ToolError("timeout_seconds must be a positive number.")
        if max_digits is None and terminator is None:
            terminator = "#"
        digits, why = await collect(
            max_digits=max_digits,
            terminator=terminator,
            timeout=min(float(timeout), MAX_COLLECT_SECONDS),
        )
        _record(ctx, tool=plan.name, ok=bool(digits), digits=digits, ended_by=why)
        if not digits:
            return "The caller typed nothing."
        if why == "timeout":
            return f"The caller typed {digits} and then stopped (timed out)."
        return f"The caller typed {digits}."

    return collect_digits


def _warm_transfer_handler(plan: ToolPlan, ctx: ToolCallContext) -> ToolCallable | None:
    warm = ctx.warm_transfer
    if warm is None:
        return None
    options = parse_warm_transfer(plan.options, where=f"tool {plan.name!r}")

    async def warm_transfer(arguments: dict[str, Any]) -> Any:
        try:
            outcome = await warm(options, str(arguments.get("summary") or ""))
        except Exception as e:
            logger.exception("warm transfer failed")
            _record(ctx, tool=plan.name, ok=False, error=str(e))
            raise ToolError("The transfer did not go through.") from None
        _record(ctx, tool=plan.name, ok=True, bridged=outcome is None)
        if outcome is None:
            # bridged: the agent has left the call, nothing more to say
            raise StopResponse()
        return outcome

    return warm_transfer
