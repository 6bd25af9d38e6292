"""``replay --fault`` reaches the new vendors through their own base-URL settings."""

from __future__ import annotations

import pytest

from pipelines.errors import ConfigError
from worker.dev.faults import ArmedFault, armed, parse_fault, worker_overrides
from worker.plan import ProviderChoice
from worker.settings import Settings


def choice(vendor: str, model: str) -> ProviderChoice:
    return ProviderChoice(id=f"{vendor}:{model}", vendor=vendor, model=model, score=1.0)


@pytest.mark.parametrize(
    ("spec", "vendor", "env"),
    [
        ("tts:speechify:reset@2", "speechify", "SPEECHIFY_BASE_URL"),
        ("llm:speechify:stall@2", "speechify", "SPEECHIFY_LLM_BASE_URL"),
        ("tts:cartesia:refuse@1", "cartesia", "CARTESIA_BASE_URL"),
        ("llm:anthropic:reset@3", "anthropic", "ANTHROPIC_BASE_URL"),
    ],
)
def test_the_worker_is_pointed_at_the_injector(spec: str, vendor: str, env: str) -> None:
    fault = ArmedFault(parse_fault(spec), "http://127.0.0.1:1234")
    assert worker_overrides(choice(vendor, "m"), fault, {}) == {env: "http://127.0.0.1:1234"}


async def test_a_500_is_not_relayed_for_anthropic() -> None:
    with pytest.raises(ConfigError, match="OpenAI-compatible relay"):
        async with armed(parse_fault("llm:anthropic:500@1"), choice("anthropic", "c"), Settings()):
            pass
