"""The domain's small types, defined once: both ``pipelines`` and ``worker`` import them."""

from __future__ import annotations

from typing import Final, Literal, get_args

Layer = Literal["stt", "llm", "tts"]
"""A pipeline layer: speech-to-text, the language model, text-to-speech."""
LAYERS: Final[tuple[Layer, ...]] = get_args(Layer)

OptimizeFor = Literal["latency", "quality", "cost"]
"""What the catalog ranks a layer's allowed providers by (reference ``000_*``)."""

AMDCategory = Literal["human", "uncertain", "machine-vm", "machine-ivr", "machine-unavailable"]
"""Who answered an outbound call (reference ``003_*``)."""
AMD_CATEGORIES: Final[tuple[AMDCategory, ...]] = get_args(AMDCategory)

__all__ = ["AMD_CATEGORIES", "LAYERS", "AMDCategory", "Layer", "OptimizeFor"]
