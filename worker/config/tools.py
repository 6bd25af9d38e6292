"""An agent's tools as the control plane serves them (``GET /v1/agents/{id}/tools``),
validated into ``ToolPlan`` entries: webhook tools and the built-ins ``end_call``,
``transfer_call``, ``send_dtmf``, ``collect_digits`` and ``warm_transfer`` (the transfers'
options: ``worker.config.transfers``). ``worker.call.tools`` runs them on a call.

Tools are scoped to their agent (reference 000: the key is organization, agent, tool
name): :func:`parse_tools` reads exactly one agent's answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ConfigError
from worker.config.transfers import (
    parse_warm_transfer,
    transfer_destinations,
    transfer_parameters,
)


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
    """``end_call``, ``transfer_call``, ``send_dtmf``, ``collect_digits`` or ``warm_transfer``
    for built-ins."""
    options: dict[str, Any] = field(default_factory=dict)
    """Built-in specifics, e.g. ``{"to": "+1..."}`` for ``transfer_call``."""


BUILTINS = ("end_call", "transfer_call", "send_dtmf", "collect_digits", "warm_transfer")
MAX_TIMEOUT_SECONDS = 120.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BUILTIN_DESCRIPTIONS = {
    "end_call": (
        "End the call. Use only when the caller is clearly done or asks to hang up; "
        "a goodbye is spoken before hanging up."
    ),
    "transfer_call": (
        "Transfer the caller to a human. Tell the caller you are transferring them, then call this."
    ),
    "send_dtmf": "Press keys on the phone keypad (DTMF), e.g. to navigate a phone menu.",
    "collect_digits": (
        "Wait for the caller to type digits on their keypad (a PIN, an account number, a "
        "menu choice) and get them. Ask the caller to type them first."
    ),
    "warm_transfer": (
        "Transfer the caller to a person, who is asked first: the caller waits on hold. "
        "Tell the caller you are connecting them, then call this with a one-sentence summary."
    ),
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
    "collect_digits": {
        "type": "object",
        "properties": {
            "max_digits": {
                "type": "integer",
                "minimum": 1,
                "maximum": 32,
                "description": "Stop after this many digits.",
            },
            "terminator": {
                "type": "string",
                "enum": ["#", "*"],
                "description": "Stop when the caller presses this key (not included).",
            },
            "timeout_seconds": {
                "type": "number",
                "minimum": 1,
                "maximum": 60,
                "description": "Give up waiting after this many seconds (default 10).",
            },
        },
    },
    "warm_transfer": {
        "type": "object",
        "properties": {
            "summary": {
                "type": "string",
                "description": "One sentence for the person: who is calling and what they need.",
            }
        },
    },
}


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
    parameters = _BUILTIN_PARAMETERS[builtin]
    if builtin == "transfer_call":
        parameters = transfer_parameters(transfer_destinations(options, where=where))
    if builtin == "warm_transfer":
        options = parse_warm_transfer(options, where=where).to_options()
    name = spec.get("name", builtin)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{builtin}: invalid name {name!r}", field=f"{where}.name")
    description = spec.get("description") or _BUILTIN_DESCRIPTIONS[builtin]
    if not isinstance(description, str):
        raise ConfigError(f"{builtin}: description must be a string", field=f"{where}.description")
    return ToolPlan(
        name=name,
        description=description,
        parameters=parameters,
        builtin=builtin,
        options=options,
    )
