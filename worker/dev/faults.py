"""``voice-worker replay --fault LAYER:PROVIDER:KIND@SECONDS``: rehearse an outage.

The provider's connection is routed through a fault injector that breaks it at SECONDS
after the call starts, so the call shows what the failover (or the apology, when nothing
is left in the allowed set) sounds like on the user's own config:

- ``reset``, ``stall``, ``refuse``: toxiproxy in front of the provider (TCP level);
- ``500``: an OpenAI-compatible relay that answers HTTP 500 (LLM providers).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipelines.errors import ConfigError
from worker.plan import ProviderChoice, SessionPlan
from worker.settings import Settings

KINDS = ("reset", "stall", "500", "refuse")
_SPEC = re.compile(r"^(stt|llm|tts):([a-z0-9_.-]+(?::[A-Za-z0-9_.*/-]+)?):([a-z0-9]+)@([0-9.]+)$")
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "deepgram": "https://api.deepgram.com/v1/listen",
    "elevenlabs": "https://api.elevenlabs.io/v1",
    "speechify": "https://api.speechify.ai",
    "cartesia": "https://api.cartesia.ai",
    "anthropic": "https://api.anthropic.com",
}
BASE_URL_ENV = {
    "local": "LOCAL_LLM_BASE_URL",
    "openai": "OPENAI_BASE_URL",
    "deepgram": "DEEPGRAM_BASE_URL",
    "elevenlabs": "ELEVEN_BASE_URL",
    "speechify": "SPEECHIFY_BASE_URL",
    "cartesia": "CARTESIA_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "llm:speechify": "SPEECHIFY_LLM_BASE_URL",
}
"""Where the worker takes each vendor's base URL (``layer:vendor`` where the layer's own)."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    layer: str
    provider: str
    """``vendor`` or ``vendor:model``, as in an allowlist."""
    kind: str
    at: float
    """Seconds after the call starts."""


def parse_fault(spec: str) -> FaultSpec:
    match = _SPEC.match(spec.strip())
    if not match or match.group(3) not in KINDS:
        raise ConfigError(
            f"{spec!r} is not LAYER:PROVIDER:KIND@SECONDS (layer stt|llm|tts, kind "
            f"{'|'.join(KINDS)}), e.g. llm:local:reset@12",
            field="--fault",
        )
    layer, provider, kind, at = match.groups()
    if kind == "500" and layer != "llm":
        raise ConfigError("500 is injected over HTTP for llm providers only", field="--fault")
    return FaultSpec(layer, provider, kind, float(at))


def target(plan: SessionPlan, fault: FaultSpec) -> ProviderChoice:
    """The chain link the fault hits; it must be in the plan's allowed chain."""
    for choice in plan.providers[fault.layer]:  # type: ignore[index]
        if fault.provider in (choice.vendor, choice.id):
            if choice.vendor == "local" and fault.layer != "llm":
                raise ConfigError(
                    f"{choice.id} runs inside the worker: there is no connection to break",
                    field="--fault",
                )
            return choice
    chain = [c.id for c in plan.providers[fault.layer]]  # type: ignore[index]
    raise ConfigError(
        f"{fault.provider} is not in the {fault.layer} chain of this call {chain}",
        field="--fault",
    )


def _with_host(url: str, host_port: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=host_port))


@dataclass
class ArmedFault:
    """A fault injector in front of one provider; ``fire()`` breaks the connection."""

    spec: FaultSpec
    url: str
    """Base URL the worker must use for the provider instead of the real one."""
    _proxy: Any = None
    _relay: Any = None

    async def fire(self) -> None:
        if self._relay is not None:
            self._relay.knobs.fail_with_status = 500
        elif self.spec.kind == "reset":
            await self._proxy.reset()
        elif self.spec.kind == "stall":
            await self._proxy.stall()
        else:
            await self._proxy.refuse()

    async def fire_at(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, started + self.spec.at - loop.time()))
        await self.fire()


@contextlib.asynccontextmanager
async def armed(
    fault: FaultSpec, choice: ProviderChoice, settings: Settings
) -> AsyncIterator[ArmedFault]:
    """Starts the injector in front of ``choice``'s base URL."""
    base = choice.base_url or (
        settings.local_llm_base_url
        if choice.vendor == "local"
        else DEFAULT_BASE_URLS.get(choice.vendor)
    )
    if not base:
        raise ConfigError(
            f"{choice.id} has no base URL to put a fault in front of", field="--fault"
        )
    if fault.kind == "500" and choice.vendor == "anthropic":
        raise ConfigError(
            "500 is injected by an OpenAI-compatible relay: use reset, stall or refuse for "
            f"{choice.id}",
            field="--fault",
        )
    if fault.kind == "500":
        from pipelines.loopback import OpenAIServer

        relay = OpenAIServer(upstream=base)
        url = await relay.start()
        try:
            yield ArmedFault(fault, f"{url}/v1", _relay=relay)
        finally:
            await relay.stop()
        return
    from worker.dev.services import ToxiproxyServer

    async with ToxiproxyServer() as toxi:
        proxy = await toxi.proxy(f"{fault.layer}-{choice.vendor}", base)
        yield ArmedFault(fault, _with_host(base, proxy.listen), _proxy=proxy)


def worker_overrides(
    choice: ProviderChoice, fault: ArmedFault, metadata: dict[str, Any]
) -> dict[str, str]:
    """Env for the worker (and, for a ``custom`` endpoint, the inline agent) so that the
    provider is reached through the injector."""
    if choice.vendor == "custom":
        agent = metadata.get("agent")
        if not isinstance(agent, dict):
            raise ConfigError("a custom endpoint fault needs --agent FILE", field="--fault")
        agent["llm_base_url"] = fault.url
        return {}
    layer_key = f"{fault.spec.layer}:{choice.vendor}"
    return {BASE_URL_ENV.get(layer_key, BASE_URL_ENV[choice.vendor]): fault.url}
