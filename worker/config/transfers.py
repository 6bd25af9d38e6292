"""Where transfers may send the caller.

``transfer_call`` (blind, SIP REFER): the built-in's ``options.to`` (one target) or
``options.destinations`` (``[{to, label}]`` as reference 002 lists them for transfers; the
LLM picks one by its label). A target is an E.164 number (sent as ``tel:+E164``) or a
``sip:``/``sips:``/``tel:`` URI.

The ``warm_transfer`` built-in's options as an agent's tool list carries them (reference
``002_*``, "Transfer callers": ``destinations``, ``screeningPrompt``, ``fallback``), validated
into :class:`WarmTransferOptions`. ``worker.call.telephony`` runs the transfer.

A tool entry::

    {"type": "warm_transfer",
     "options": {"trunkId": "ST_...", "from": "+12015550199",
                 "destinations": [{"to": "+12015551234", "label": "Front desk"},
                                  {"to": "+12015554321", "label": "Overflow", "trunkId": "ST_..."}],
                 "screeningPrompt": "Confirm the recipient can help before bridging.",
                 "fallback": {"strategy": "take_message"},
                 "ringingTimeout": 20, "acceptTimeout": 15, "holdAudio": "music"}}

Each destination is dialled through its own ``trunkId`` or the tool's (a LiveKit outbound
trunk: the worker places the consultation leg with ``CreateSIPParticipant``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.errors import ConfigError

TARGET_RE = re.compile(r"^(\+[1-9]\d{6,14}|sips?:\S+|tel:\S+)$")
MAX_DESTINATIONS = 10


@dataclass(frozen=True, slots=True)
class TransferDestination:
    to: str
    """As configured: ``+E164`` or a URI."""
    label: str | None = None
    """What the LLM calls it (``Front desk``); unique among the tool's destinations."""

    @property
    def uri(self) -> str:
        """The REFER target: a bare number becomes ``tel:+E164``."""
        return f"tel:{self.to}" if self.to.startswith("+") else self.to


def transfer_destinations(
    options: Mapping[str, Any], *, where: str
) -> tuple[TransferDestination, ...]:
    """The destinations of a ``transfer_call`` tool's ``options``, validated; errors name
    ``where.options...``."""
    raw: Sequence[Any]
    if "destinations" in options:
        raw = options["destinations"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_DESTINATIONS:
            raise ConfigError(
                f"transfer_call options.destinations must be a list of 1-{MAX_DESTINATIONS} "
                "{to, label} objects",
                field=f"{where}.options.destinations",
            )
    else:
        raw = [{"to": options.get("to")}]
    found: list[TransferDestination] = []
    labels: set[str] = set()
    for index, entry in enumerate(raw):
        at = (
            f"{where}.options.destinations[{index}]"
            if "destinations" in options
            else f"{where}.options"
        )
        if not isinstance(entry, Mapping):
            raise ConfigError("a transfer destination must be an object", field=at)
        to, label = entry.get("to"), entry.get("label")
        if not isinstance(to, str) or not TARGET_RE.match(to):
            raise ConfigError(
                "transfer_call needs options.to: an E.164 number or a sip:/tel: URI",
                field=f"{at}.to",
            )
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError("a destination label must be a non-empty string", field=f"{at}.label")
        if label is None and len(raw) > 1:
            raise ConfigError("each of several destinations needs a label", field=f"{at}.label")
        if label is not None:
            if label.casefold() in labels:
                raise ConfigError(f"destination label {label!r} is used twice", field=f"{at}.label")
            labels.add(label.casefold())
        found.append(TransferDestination(to=to, label=label))
    return tuple(found)


def pick_destination(
    destinations: Sequence[TransferDestination], label: object
) -> TransferDestination | None:
    """The destination the LLM named (labels match without case); the only one when there
    is one and no label was given; else None."""
    if isinstance(label, str) and label.strip():
        wanted = label.strip().casefold()
        return next((d for d in destinations if (d.label or "").casefold() == wanted), None)
    return destinations[0] if len(destinations) == 1 else None


def transfer_parameters(destinations: Sequence[TransferDestination]) -> dict[str, Any]:
    """The tool's JSON schema: a ``destination`` to pick when there are several."""
    labels = [d.label for d in destinations if d.label]
    if len(destinations) < 2:
        return {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {
            "destination": {
                "type": "string",
                "enum": labels,
                "description": "Who to transfer the caller to.",
            }
        },
        "required": ["destination"],
    }


FallbackStrategy = Literal["take_message", "none"]
HoldAudio = Literal["music", "silence"]

DEFAULT_SCREENING_PROMPT = "Confirm the recipient can help before bridging."
DEFAULT_RINGING_TIMEOUT = 20.0
DEFAULT_ACCEPT_TIMEOUT = 15.0
MAX_TIMEOUT_SECONDS = 120.0
_TO_RE = re.compile(r"^(\+[1-9]\d{6,14}|sips?:\S+|tel:\S+|[A-Za-z0-9_.+-]{1,64})$")
"""E.164, a ``sip:``/``tel:`` URI, or a bare user part (the trunk's address completes it)."""


@dataclass(frozen=True, slots=True)
class WarmDestination:
    to: str
    """What the consultation leg dials (``sip_call_to``)."""
    label: str
    """How the agent, the webhooks and the report name it."""
    trunk_id: str
    """The LiveKit outbound trunk it is dialled through."""


@dataclass(frozen=True, slots=True)
class WarmTransferOptions:
    destinations: tuple[WarmDestination, ...]
    """Tried in order: a decline, no answer or busy goes on to the next (``tryNext``)."""
    screening_prompt: str = DEFAULT_SCREENING_PROMPT
    """Spoken to each destination before the call summary and the accept/decline keys."""
    fallback: FallbackStrategy = "take_message"
    """When every destination declined: ``take_message`` tells the agent to take one."""
    from_number: str | None = None
    """The caller id the destinations see (``sip_number``); unset: the trunk's."""
    ringing_timeout: float = DEFAULT_RINGING_TIMEOUT
    accept_timeout: float = DEFAULT_ACCEPT_TIMEOUT
    """Seconds after the screening prompt for a key press; none counts as a decline."""
    hold_audio: HoldAudio = "music"
    """What the caller hears on hold: LiveKit's built-in hold music, or silence."""

    def to_options(self) -> dict[str, Any]:
        """The plain-JSON form kept in ``ToolPlan.options`` (``voice-worker plan`` prints it);
        :func:`parse_warm_transfer` reads it back."""
        return {
            "destinations": [
                {"to": d.to, "label": d.label, "trunkId": d.trunk_id} for d in self.destinations
            ],
            "screeningPrompt": self.screening_prompt,
            "fallback": {"strategy": self.fallback},
            "from": self.from_number,
            "ringingTimeout": self.ringing_timeout,
            "acceptTimeout": self.accept_timeout,
            "holdAudio": self.hold_audio,
        }


def _get(spec: Mapping[str, Any], camel: str, snake: str) -> Any:
    return spec[camel] if camel in spec else spec.get(snake)


def _seconds(value: Any, default: float, field: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds, got {value!r}", field=field)
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise ConfigError(f"must be in (0, {MAX_TIMEOUT_SECONDS:g}] seconds", field=field)
    return float(value)


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a non-empty string", field=field)
    return value.strip()


def parse_warm_transfer(options: Mapping[str, Any], *, where: str) -> WarmTransferOptions:
    """Validates a ``warm_transfer`` tool's options; errors name ``where.options.<field>``."""
    at = f"{where}.options"
    trunk = _text(_get(options, "trunkId", "trunk_id"), f"{at}.trunkId")
    raw = options.get("destinations")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            "warm_transfer needs a non-empty destinations list", field=f"{at}.destinations"
        )
    if len(raw) > MAX_DESTINATIONS:
        raise ConfigError(
            f"at most {MAX_DESTINATIONS} destinations, got {len(raw)}", field=f"{at}.destinations"
        )
    destinations = []
    for i, entry in enumerate(raw):
        here = f"{at}.destinations[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError("expected an object {to, label?, trunkId?}", field=here)
        to = entry.get("to")
        if not isinstance(to, str) or not _TO_RE.match(to):
            raise ConfigError(
                "to must be an E.164 number, a sip:/tel: URI or a SIP user", field=f"{here}.to"
            )
        label = _text(entry.get("label"), f"{here}.label") or to
        dest_trunk = _text(_get(entry, "trunkId", "trunk_id"), f"{here}.trunkId") or trunk
        if dest_trunk is None:
            raise ConfigError(
                "no outbound trunk: set trunkId on the destination or the tool",
                field=f"{here}.trunkId",
            )
        destinations.append(WarmDestination(to=to, label=label, trunk_id=dest_trunk))

    fallback_raw = options.get("fallback")
    strategy: Any = "take_message"
    if isinstance(fallback_raw, Mapping):
        strategy = fallback_raw.get("strategy", "take_message")
    elif fallback_raw is not None:
        strategy = fallback_raw
    if strategy not in ("take_message", "none"):
        raise ConfigError(
            f"fallback.strategy must be take_message or none, got {strategy!r}",
            field=f"{at}.fallback.strategy",
        )
    hold: Any = _get(options, "holdAudio", "hold_audio") or "music"
    if hold not in ("music", "silence"):
        raise ConfigError(
            f"holdAudio must be music or silence, got {hold!r}", field=f"{at}.holdAudio"
        )
    return WarmTransferOptions(
        destinations=tuple(destinations),
        screening_prompt=_text(
            _get(options, "screeningPrompt", "screening_prompt"), f"{at}.screeningPrompt"
        )
        or DEFAULT_SCREENING_PROMPT,
        fallback=strategy,
        from_number=_text(options.get("from"), f"{at}.from"),
        ringing_timeout=_seconds(
            _get(options, "ringingTimeout", "ringing_timeout"),
            DEFAULT_RINGING_TIMEOUT,
            f"{at}.ringingTimeout",
        ),
        accept_timeout=_seconds(
            _get(options, "acceptTimeout", "accept_timeout"),
            DEFAULT_ACCEPT_TIMEOUT,
            f"{at}.acceptTimeout",
        ),
        hold_audio=hold,
    )
