"""Agent tools: plan entries and their execution as LLM function tools.

Tools are scoped to their agent (reference 000: the key is organization, agent, tool
name): :func:`parse_tools` reads one agent's ``GET /v1/agents/{id}/tools`` answer and
:func:`build_function_tools` turns exactly that list into livekit raw function tools.

A webhook tool call POSTs ``{call_id, agent_id, tool, arguments, metadata}`` to the
tool's URL, Standard-Webhooks-signed like lifecycle webhooks, within the tool's
timeout; the JSON reply goes back to the LLM. Failures (timeout, network, non-2xx) come
back as ``ToolError`` so the agent can tell the caller, never as a crash.

Built-ins act on the call through callbacks in :class:`ToolCallContext`, so they can be
tested without a room: ``end_call`` (``hangup``), ``transfer_call`` (``transfer``, see
:func:`sip_transfer`), ``send_dtmf`` (``publish_dtmf``, see :func:`room_dtmf`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from livekit.agents.llm import RawFunctionTool, StopResponse, ToolError, function_tool

from pipelines.errors import ConfigError
from worker.call.webhooks import post_signed

if TYPE_CHECKING:
    from livekit import api, rtc

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """One tool the LLM may call, resolved for a single call."""

    name: str
    """Function name shown to the LLM; unique within the agent."""
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments (an ``object`` schema)."""
    url: str | None = None
    """Webhook that executes the tool; ``None`` for built-ins."""
    timeout_seconds: float = 10.0
    builtin: str | None = None
    """``end_call``, ``transfer_call`` or ``send_dtmf`` for built-in tools."""
    options: dict[str, Any] = field(default_factory=dict)
    """Built-in specifics, e.g. ``{"to": "+1..."}`` for ``transfer_call``."""


BUILTINS = ("end_call", "transfer_call", "send_dtmf")
MAX_TIMEOUT_SECONDS = 120.0
MAX_REPLY_CHARS = 8000
"""Longer tool replies are cut: they go into the LLM context on every following turn."""
DTMF_GAP_SECONDS = 0.3

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DTMF_CODES = {str(d): d for d in range(10)} | {
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}

_BUILTIN_DESCRIPTIONS = {
    "end_call": (
        "End the call. Use only when the caller is clearly done or asks to hang up; "
        "a goodbye is spoken before hanging up."
    ),
    "transfer_call": (
        "Transfer the caller to a human. Tell the caller you are transferring them, then call this."
    ),
    "send_dtmf": "Press keys on the phone keypad (DTMF), e.g. to navigate a phone menu.",
}

_BUILTIN_PARAMETERS: dict[str, dict[str, Any]] = {
    "end_call": {
        "type": "object",
        "properties": {
            "goodbye": {"type": "string", "description": "Short goodbye to say before hanging up."}
        },
    },
    "transfer_call": {"type": "object", "properties": {}},
    "send_dtmf": {
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "description": "Keys to press in order: 0-9, *, #, A-D.",
                "pattern": "^[0-9*#A-Da-d]+$",
            }
        },
        "required": ["digits"],
    },
}


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
    record_event: EventSink | None = None
    dtmf_gap_seconds: float = DTMF_GAP_SECONDS


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


def parse_tools(raw: Any, *, tool_url: str | None) -> tuple[ToolPlan, ...]:
    """Validate an agent's tool list: a list or ``{"tools": [...]}``.

    Entries are ``{name, description, parameters|input_schema, url?,
    timeout_seconds|timeoutSeconds?}``, OpenAI style ``{"type": "function", "function":
    {...}}``, or built-ins ``{"type"|"builtin": "transfer_call", "options": {"to": ...}}``.
    An entry without ``url`` uses the agent's ``tool_url``.
    """
    if isinstance(raw, Mapping):
        if "tools" not in raw:
            raise ConfigError("expected a list or an object with 'tools'", field="tools")
        raw = raw["tools"]
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list, got {type(raw).__name__}", field="tools")
    plans: list[ToolPlan] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        plan = _parse_entry(index, entry, tool_url)
        if plan.name in seen:
            raise ConfigError(
                f"tool {plan.name!r} is defined twice (also tools[{seen[plan.name]}])",
                field=f"tools[{index}].name",
            )
        seen[plan.name] = index
        plans.append(plan)
    return tuple(plans)


def _parse_entry(index: int, entry: Any, tool_url: str | None) -> ToolPlan:
    where = f"tools[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"expected an object, got {type(entry).__name__}", field=where)
    kind = entry.get("builtin") or entry.get("type")
    if kind == "function":
        inner = entry.get("function")
        if not isinstance(inner, Mapping):
            raise ConfigError("OpenAI-style tool needs a 'function' object", field=where)
        # url/timeout may sit beside "function" or inside it
        spec: Mapping[str, Any] = {**entry, **inner}
        kind = None
    else:
        spec = entry
    if kind in BUILTINS:
        return _parse_builtin(where, str(kind), spec)
    if kind not in (None, "webhook", "custom"):
        raise ConfigError(
            f"unknown tool type {kind!r} (expected function, webhook or one of {BUILTINS})",
            field=f"{where}.type",
        )

    name = spec.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"tool name {name!r} must be 1-64 characters of letters, digits, _ or -",
            field=f"{where}.name",
        )
    label = f"tool {name!r}"
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{label}: description must be a string", field=f"{where}.description")

    params_key = "parameters" if "parameters" in spec else "input_schema"
    parameters = spec.get(params_key)
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object":
        raise ConfigError(
            f"{label}: {params_key} must be a JSON schema of type 'object'",
            field=f"{where}.{params_key}",
        )

    url = spec.get("url") or tool_url
    if not url:
        raise ConfigError(f"{label}: no url and the agent has no tool_url", field=f"{where}.url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{label}: url must be an http(s) URL", field=f"{where}.url")

    timeout_key = "timeout_seconds" if "timeout_seconds" in spec else "timeoutSeconds"
    timeout = spec.get(timeout_key, 10.0)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT_SECONDS
    ):
        raise ConfigError(
            f"{label}: timeout must be a number in (0, {MAX_TIMEOUT_SECONDS:g}] seconds",
            field=f"{where}.{timeout_key}",
        )
    return ToolPlan(
        name=name,
        description=description,
        parameters=dict(parameters),
        url=url,
        timeout_seconds=float(timeout),
    )


def _parse_builtin(where: str, builtin: str, spec: Mapping[str, Any]) -> ToolPlan:
    options = spec.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{builtin}: options must be an object", field=f"{where}.options")
    options = dict(options)
    for key in ("to", "goodbye"):
        if key in spec and key not in options:
            options[key] = spec[key]
    if builtin == "transfer_call":
        to = options.get("to")
        if not isinstance(to, str) or not re.match(r"^(\+[1-9]\d{6,14}|sips?:\S+|tel:\S+)$", to):
            raise ConfigError(
                "transfer_call needs options.to: an E.164 number or a sip:/tel: URI",
                field=f"{where}.options.to",
            )
    name = spec.get("name", builtin)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{builtin}: invalid name {name!r}", field=f"{where}.name")
    description = spec.get("description") or _BUILTIN_DESCRIPTIONS[builtin]
    if not isinstance(description, str):
        raise ConfigError(f"{builtin}: description must be a string", field=f"{where}.description")
    return ToolPlan(
        name=name,
        description=description,
        parameters=_BUILTIN_PARAMETERS[builtin],
        builtin=builtin,
        options=options,
    )


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
        to = str(plan.options["to"])

        async def transfer_call(arguments: dict[str, Any]) -> Any:
            try:
                await transfer(to)
            except Exception as e:
                _record(ctx, tool=plan.name, ok=False, to=to, error=str(e))
                raise ToolError("The transfer did not go through.") from None
            _record(ctx, tool=plan.name, ok=True, to=to)
            raise StopResponse()

        return transfer_call

    publish = ctx.publish_dtmf
    if publish is None:
        return None

    async def send_dtmf(arguments: dict[str, Any]) -> Any:
        digits = str(arguments.get("digits", "")).upper()
        if not digits or any(d not in _DTMF_CODES for d in digits):
            raise ToolError("digits must be keys 0-9, *, #, A-D.")
        for i, digit in enumerate(digits):
            if i and ctx.dtmf_gap_seconds > 0:
                await asyncio.sleep(ctx.dtmf_gap_seconds)
            try:
                await publish(_DTMF_CODES[digit], digit)
            except Exception as e:
                _record(ctx, tool=plan.name, ok=False, digits=digits, error=str(e))
                raise ToolError(f"Pressing {digit} failed.") from None
        _record(ctx, tool=plan.name, ok=True, digits=digits)
        return f"Pressed {digits}."

    return send_dtmf
