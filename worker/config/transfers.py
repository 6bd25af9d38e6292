"""Where ``transfer_call`` may send the caller: the built-in's ``options.to`` (one target)
or ``options.destinations`` (``[{to, label}]`` as reference 002 lists them for transfers;
the LLM picks one by its label). A target is an E.164 number (sent as ``tel:+E164``) or a
``sip:``/``sips:``/``tel:`` URI."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
