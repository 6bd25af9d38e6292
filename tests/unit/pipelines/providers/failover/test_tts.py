"""TTS failover: text is cut into sentences and a segment resumes at the first sentence
not fully played, at the chain's sample rate."""

from __future__ import annotations

import time

from pipelines.providers.failover import FailoverTTS, SentenceQueue, SwitchEvent
from tests.fakes import FakeTTS, make_chain


def test_sentence_queue_cuts_at_sentence_ends_as_text_arrives() -> None:
    q = SentenceQueue()
    q.push_text("Hello there. How")
    assert q.sentences == ["Hello there."]
    q.push_text(" are you? Fine")
    q.end()
    assert q.sentences == ["Hello there.", "How are you?", "Fine"] and q.closed


async def test_tts_segment_resumes_at_first_unplayed_sentence_resampled() -> None:
    a, b = FakeTTS(16000, fail_on_call=1, fail_after_chunks=2), FakeTTS(24000)
    events: list[SwitchEvent] = []
    model = FailoverTTS(make_chain("tts", [a, b], events=events))
    assert model.sample_rate == 16000
    stream = model.stream()
    for token in ["First one. ", "Second sentence here. ", "Third."]:
        stream.push_text(token)
    stream.end_input()
    collected = [ev.frame async for ev in stream]
    await stream.aclose()
    assert a.texts == ["First one.", "Second sentence here."]
    assert b.texts == ["Second sentence here.", "Third."]
    assert {f.sample_rate for f in collected} == {16000}
    seconds = sum(f.samples_per_channel for f in collected) / 16000
    # all of 1 and 2 and 3 (0.1 s of the failed attempt at 2 was played twice)
    expected = (len("First one.") + len("Second sentence here.") + len("Third.")) / 100
    assert expected + 0.05 < seconds < expected + 0.2
    assert events[0].reason == "connection"


async def test_tts_first_byte_stall_switches() -> None:
    a, b = FakeTTS(stall=True), FakeTTS()
    model = FailoverTTS(make_chain("tts", [a, b], deadline=0.2))
    started = time.monotonic()
    frames = [ev.frame async for ev in model.synthesize("Hello.")]
    assert 0.2 <= time.monotonic() - started < 0.6
    assert b.texts == ["Hello."] and sum(f.samples_per_channel for f in frames) > 0
