"""Fake providers and audio outputs for tests: each subclasses LiveKit's real base class and
overrides only the hook, with knobs set at construction or flipped mid-test with
``update_options(...)``, and records what it was asked (in the manner of livekit/agents'
``tests/fake_stt.py``). Beside them: generated call audio for the recording tests and a real
webhook receiver on loopback that verifies signatures, and ``until`` to wait on a service.
"""

from tests.fakes.audio import FakeSink, PassThrough, PausingSink
from tests.fakes.chain import Clock, make_chain
from tests.fakes.llm import FakeLLM, FakeLLMStream, collect_reply
from tests.fakes.polling import until
from tests.fakes.recording import AGENT_HZ, CALLER_HZ, level_at, recorded_call, tone_frames
from tests.fakes.stt import FakeSTT, FakeSTTStream
from tests.fakes.tts import FakeChunkedStream, FakeTTS
from tests.fakes.webhooks import Delivery, Receiver, Reply

__all__ = [
    "AGENT_HZ",
    "CALLER_HZ",
    "Clock",
    "Delivery",
    "FakeChunkedStream",
    "FakeLLM",
    "FakeLLMStream",
    "FakeSTT",
    "FakeSTTStream",
    "FakeSink",
    "FakeTTS",
    "PassThrough",
    "PausingSink",
    "Receiver",
    "Reply",
    "collect_reply",
    "level_at",
    "make_chain",
    "recorded_call",
    "tone_frames",
    "until",
]
