"""Mid-call failover inside a layer's ranked allowed providers: one mechanism, three layers.

``ProviderChain`` is the mechanism (``chain``): it walks the session's ranked allowed chain,
skips providers whose circuit is open in the per-process ``HealthRegistry`` (``health``),
fails a provider over on an error or on a ``StallError`` from its ``Watchdog``
(``watchdog``), hedges a late first output (``HedgePolicy``) and emits a ``SwitchEvent`` for
each switch and hedge. What a layer adds is only how to resume its request on the
next provider: ``FailoverSTT`` replays the turn in flight (``stt``), ``FailoverLLM``
continues a cut reply (``llm``), ``FailoverTTS`` resumes at the first unplayed sentence
(``tts``). They subclass LiveKit's ``stt.STT``, ``llm.LLM`` and ``tts.TTS`` so an
``AgentSession`` uses them unchanged; inner providers are called with ``max_retry=0`` so
the chain, not the plugin, decides. Build them with ``build_failover_layers``.
"""

from pipelines.providers.failover.chain import (
    Deadlines,
    LayerDown,
    Link,
    ProviderChain,
    SwitchEvent,
    classify,
)
from pipelines.providers.failover.health import (
    BreakerPolicy,
    HealthRegistry,
    ProviderHealth,
    default_health,
)
from pipelines.providers.failover.layers import build_failover_layers
from pipelines.providers.failover.llm import CONTINUE_INSTRUCTION, FailoverLLM, RepeatFilter
from pipelines.providers.failover.stt import FailoverSTT, TurnBuffer
from pipelines.providers.failover.tts import FailoverTTS, SentenceQueue
from pipelines.providers.failover.watchdog import (
    HEDGE_REASONS,
    NO_HEDGE,
    HedgePolicy,
    RatePolicy,
    StallError,
    Watchdog,
)

__all__ = [
    "CONTINUE_INSTRUCTION",
    "HEDGE_REASONS",
    "NO_HEDGE",
    "BreakerPolicy",
    "Deadlines",
    "FailoverLLM",
    "FailoverSTT",
    "FailoverTTS",
    "HealthRegistry",
    "HedgePolicy",
    "LayerDown",
    "Link",
    "ProviderChain",
    "ProviderHealth",
    "RatePolicy",
    "RepeatFilter",
    "SentenceQueue",
    "StallError",
    "SwitchEvent",
    "TurnBuffer",
    "Watchdog",
    "build_failover_layers",
    "classify",
    "default_health",
]
