"""Assembly: the three failover layers of a session from the plan's ranked chains."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from livekit.agents import vad

from pipelines.providers.factories import ProviderSpec, build
from pipelines.providers.failover.chain import (
    Deadlines,
    Link,
    ProviderChain,
    SwitchEvent,
)
from pipelines.providers.failover.health import HealthRegistry
from pipelines.providers.failover.llm import FailoverLLM
from pipelines.providers.failover.stt import FailoverSTT, stt_link
from pipelines.providers.failover.tts import FailoverTTS
from pipelines.providers.failover.watchdog import (
    NO_HEDGE,
    HedgePolicy,
    RatePolicy,
)

T = TypeVar("T")


def build_failover_layers(
    specs: Mapping[str, Sequence[ProviderSpec]],
    *,
    deadlines: Deadlines,
    health: HealthRegistry,
    on_switch: Callable[[SwitchEvent], None],
    return_to_primary: bool = False,
    vad: vad.VAD | None = None,
    hedge: HedgePolicy | None = None,
    rate: RatePolicy | None = None,
) -> dict[str, Any]:
    """``{"stt": FailoverSTT, "llm": FailoverLLM, "tts": FailoverTTS}`` for the layers in
    ``specs``, each over exactly the given ranked allowed providers (the plan's chain).
    Non-streaming STT providers are wrapped in ``stt.StreamAdapter`` with ``vad`` (a
    ``WebRTCVAD`` when none is given). The LLM's first token and the TTS's first audio of
    each sentence are hedged by ``hedge`` (``HedgePolicy()`` when none is given) when the
    layer has more than one provider; so is their mid-stream watchdog ``rate``
    (``RatePolicy()`` when none is given): a stream silent for several times its own gap
    between outputs is failed over before the deadline."""
    hedging = hedge if hedge is not None else HedgePolicy()
    pacing = rate if rate is not None else RatePolicy()
    layers: dict[str, Any] = {}

    def chain(layer: str, links: Sequence[Link[T]]) -> ProviderChain[T]:
        return ProviderChain(
            layer,
            links,
            deadline=deadlines.for_layer(layer),
            health=health,
            on_switch=on_switch,
            return_to_primary=return_to_primary,
            hedge=hedging if layer in ("llm", "tts") and len(links) > 1 else NO_HEDGE,
            rate=pacing if layer in ("llm", "tts") and len(links) > 1 else None,
        )

    if specs.get("stt"):
        layers["stt"] = FailoverSTT(
            chain("stt", [stt_link(s, deadlines.stt, vad) for s in specs["stt"]])
        )
    if specs.get("llm"):
        layers["llm"] = FailoverLLM(chain("llm", [Link(s, build(s)) for s in specs["llm"]]))
    if specs.get("tts"):
        layers["tts"] = FailoverTTS(chain("tts", [Link(s, build(s)) for s in specs["tts"]]))
    return layers
