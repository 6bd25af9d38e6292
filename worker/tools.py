"""Agent tools: plan entries and their execution as LLM function tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
