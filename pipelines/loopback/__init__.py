"""Local servers that speak the vendors' wire protocols (Deepgram, ElevenLabs, OpenAI,
Speechify, Cartesia, Anthropic and the STT vendors),
backed by the offline engines, on loopback only. Tests, ``replay --fault`` and the benches
use them, and so does the runtime: ``pipelines.providers.warmup`` rehearses each vendor
plugin against them before a job process takes a call. Hence a package of its own name
rather than a place under test tooling.
"""

from pipelines.loopback.base import Knobs, WireServer
from pipelines.loopback.segmenter import EnergySegmenter
from pipelines.loopback.streaming import SpeechServer
from pipelines.loopback.vendors.anthropic import AnthropicServer
from pipelines.loopback.vendors.assemblyai import AssemblyAIServer
from pipelines.loopback.vendors.baseten import BasetenServer
from pipelines.loopback.vendors.cartesia import CartesiaServer
from pipelines.loopback.vendors.deepgram import DeepgramServer
from pipelines.loopback.vendors.elevenlabs import ElevenLabsServer
from pipelines.loopback.vendors.openai_compat import OpenAIServer, ScriptedReply, ToolCall
from pipelines.loopback.vendors.speechify import SpeechifyServer

__all__ = [
    "AnthropicServer",
    "AssemblyAIServer",
    "BasetenServer",
    "CartesiaServer",
    "DeepgramServer",
    "ElevenLabsServer",
    "EnergySegmenter",
    "Knobs",
    "OpenAIServer",
    "ScriptedReply",
    "SpeechServer",
    "SpeechifyServer",
    "ToolCall",
    "WireServer",
]
