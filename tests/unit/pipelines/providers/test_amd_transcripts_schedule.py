"""``AMDTranscripts``' scheduling, with recognisers that answer on cue: interims from the
phrase model while an utterance is open (skipped while it is busy), a final from both,
stale interims dropped, a failure handing back to the call STT."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit.agents import APIConnectionError

from pipelines.audio import Int16Array
from pipelines.providers.amd_transcripts import RATE, AMDTranscripts

CHUNK = RATE // 50  # 20 ms


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE), dtype=np.float32) / RATE
    # a voiced, speech-like buzz: harmonics of 150 Hz, syllable-rate amplitude
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    return (0.3 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


class Fake:
    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name, self.fail = name, fail
        self.seconds: list[float] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = False
        self.closed = False

    def start_soon(self) -> None:
        self.started = True

    async def transcribe(self, pcm: Int16Array, *, timeout: float) -> str:
        self.seconds.append(len(pcm) / RATE)
        await self.release.wait()
        if self.fail:
            raise APIConnectionError(f"{self.name} died")
        return f"{self.name} {len(pcm) / RATE:.1f}"

    async def aclose(self) -> None:
        self.closed = True


async def play(own: AMDTranscripts, audio: np.ndarray) -> None:
    for i in range(0, len(audio), CHUNK):
        own.push(audio[i : i + CHUNK])
        await asyncio.sleep(0)  # answers land between frames, as on a call


def results_and(**kw: object) -> tuple[list[tuple[str, bool]], Fake, Fake, AMDTranscripts]:
    got: list[tuple[str, bool]] = []
    moon, phrases = Fake("moon"), Fake("phr")
    own = AMDTranscripts(lambda t, f: got.append((t, f)), children=(moon, phrases), **kw)  # type: ignore[arg-type]
    own.start()
    return got, moon, phrases, own


async def test_a_long_utterance_gets_interims_then_one_final_from_both() -> None:
    got, moon, phrases, own = results_and()
    assert moon.started and phrases.started
    await play(own, np.concatenate([tone(3.5), np.zeros(RATE, np.float32)]))
    await asyncio.sleep(0.01)
    await own.aclose()
    finals = [t for t, f in got if f]
    interims = [t for t, f in got if not f]
    assert len(finals) == 1 and finals[0].startswith("moon ") and " phr " in f" {finals[0]}"
    assert len(interims) >= 2  # about one a second of the open utterance
    assert moon.seconds == [moon.seconds[0]] and moon.seconds[0] > 3.0  # moonshine: the final only
    assert phrases.seconds[:-1] == sorted(phrases.seconds[:-1])  # each interim re-reads more
    assert moon.closed and phrases.closed


async def test_a_short_hello_goes_to_the_phrase_model_only() -> None:
    got, moon, _phrases, own = results_and()
    await play(own, np.concatenate([tone(0.6), np.zeros(RATE // 2, np.float32)]))
    await asyncio.sleep(0.01)
    await own.aclose()
    assert moon.seconds == []
    assert [f for _, f in got] == [True] and got[0][0].startswith("phr ")


async def test_interims_are_skipped_while_busy_and_stale_ones_dropped() -> None:
    got, _moon, phrases, own = results_and()
    phrases.release.clear()  # the phrase model hangs on its first interim
    await play(own, tone(3.5))
    assert len(phrases.seconds) == 1  # no second interim while the first is out
    await play(own, np.zeros(RATE // 2, np.float32))  # the utterance ends
    phrases.release.set()
    await asyncio.sleep(0.01)
    await own.aclose()
    assert [f for _, f in got] == [True]  # the late interim was for an ended utterance


async def test_a_failing_recogniser_hands_back_to_the_call_stt() -> None:
    got: list[tuple[str, bool]] = []
    own = AMDTranscripts(
        lambda t, f: got.append((t, f)),
        children=(Fake("moon"), Fake("phr", fail=True)),  # type: ignore[arg-type]
    )
    await play(own, np.concatenate([tone(1.5), np.zeros(RATE // 2, np.float32)]))
    await asyncio.sleep(0.01)
    assert own.failed and got == []
    await own.aclose()
