"""Answering machine detection offline: ``amd_file`` replays a recording through
``AMDClassifier`` with a simulated streaming STT (``voice-worker amd``, ``bench amd``), and the
offline transcribers that STT can be: Moonshine, the call-language pocketsphinx of
``pipelines.amd.phrase_lm``, both together (the default), or open-vocabulary pocketsphinx.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit.agents.vad import VADEventType

from pipelines.amd.classifier import FRAME_SECONDS, AMDClassifier, Verdict
from pipelines.audio import Float32Array, VADCore, read_wav

Transcriber = Callable[[Float32Array, int], str]
"""Speech to text for one utterance: float32 mono samples and their rate in, text out."""

_ENGINES: dict[str, Transcriber] = {}
_STT_CACHE: dict[tuple[str, int, int, bytes], str] = {}


@dataclass(frozen=True)
class _Memoised:
    """A transcriber whose engine is built on first use (once per process) and whose
    results are memoised on the exact audio (replays repeat segments). Picklable, so a
    test can run it in a child process."""

    name: str
    make: Callable[[], Transcriber]

    def __call__(self, samples: Float32Array, sample_rate: int) -> str:
        key = (self.name, sample_rate, len(samples), samples.tobytes())
        if key not in _STT_CACHE:
            if self.name not in _ENGINES:
                _ENGINES[self.name] = self.make()
            _STT_CACHE[key] = _ENGINES[self.name](samples, sample_rate)
        return _STT_CACHE[key]


def _open_vocabulary() -> Transcriber:
    from pipelines.engines import PocketsphinxEngine

    return PocketsphinxEngine().transcribe


def _phrase_model() -> Transcriber:
    from pipelines.amd.phrase_lm import PhraseTranscriber

    return PhraseTranscriber()


def _moonshine() -> Transcriber:
    from pipelines.engines import MoonshineTranscriber

    return MoonshineTranscriber()


pocketsphinx_transcriber = _Memoised("open", _open_vocabulary)
"""Open-vocabulary pocketsphinx. On 8 kHz telephone audio it is mostly nonsense; kept to
measure against."""

phrase_transcriber = _Memoised("phrases", _phrase_model)
"""Pocketsphinx constrained to the language of answered calls (``pipelines.amd.phrase_lm``)."""

moonshine_transcriber = _Memoised("moonshine", _moonshine)
"""Moonshine base-en (``pipelines.engines.moonshine``), the open-vocabulary model bundled in
its wheel."""


def moonshine_phrases_transcriber(samples: Float32Array, sample_rate: int) -> str:
    """Both offline recognisers, Moonshine's text then the phrase model's: the default
    offline transcript source. They err on different calls (Moonshine mishears words the
    domain model knows; the domain model forces an unknown sentence onto a known phrase),
    and ``transcript_evidence`` ranks the phrases it finds, not the recogniser they came
    from, so a machine phrase either one heard counts."""
    texts = (moonshine_transcriber(samples, sample_rate), phrase_transcriber(samples, sample_rate))
    return " ".join(t for t in texts if t)


def amd_file(
    path: str | Path,
    *,
    timeout_seconds: float = 8.0,
    realtime: bool = False,
    transcriber: Transcriber | None = None,
    stt_latency: float | None = 0.35,
    interim_every: float = 1.0,
    transcripts: Sequence[tuple[float, str, bool]] | None = None,
    **options: float,
) -> Verdict:
    """Replays a recording through the classifier in 20 ms chunks, as a call would.

    A simulated streaming STT runs beside it: its own VAD cuts utterances; every
    ``interim_every`` seconds of an utterance an interim result, and at its end a final
    result, is delivered ``stt_latency`` seconds of audio time later (the latency of a
    streaming STT; ``None`` uses the measured compute time of each transcription instead,
    which on this machine is pocketsphinx's real cost). The STT is ``transcriber``, by
    default ``moonshine_phrases_transcriber`` (offline: Moonshine and the domain-model
    pocketsphinx together). ``transcripts`` replaces the
    simulated STT with given ``(at_seconds, text, is_final)`` results (a reference
    transcript, or a recorded STT stream). After the recording ends the line
    is silent until the verdict; the deadline guarantees one. ``realtime`` paces the
    chunks on the wall clock.
    """
    audio = read_wav(path)
    rate = audio.sample_rate
    stt = transcriber or moonshine_phrases_transcriber
    core = AMDClassifier(rate, timeout_seconds, **options)  # type: ignore[arg-type]
    endpointer = VADCore(
        frame_ms=20,
        sample_rate=16000 if rate >= 16000 else 8000,
        min_silence_duration=0.3,
        keep_speech_audio=False,
    )
    chunk = round(FRAME_SECONDS * rate)
    deliveries: list[tuple[float, str, bool]] = sorted(transcripts or [], key=lambda d: d[0])
    last_interim = 0.0
    utterance_start = 0
    started = time.monotonic()

    def transcribe(segment: Float32Array | None, at: float, final: bool) -> None:
        if segment is None or len(segment) < rate // 10:
            text = ""
        else:
            t0 = time.perf_counter()
            text = stt(segment, rate)
            compute = time.perf_counter() - t0
            at += compute if stt_latency is None else stt_latency
        deliveries.append((at, text, final))
        deliveries.sort(key=lambda d: d[0])

    samples = audio.samples
    limit = math.ceil(timeout_seconds / FRAME_SECONDS) + 1
    for i in range(limit):
        x = samples[i * chunk : (i + 1) * chunk]
        if len(x) < chunk:
            x = np.concatenate((x, np.zeros(chunk - len(x), dtype=np.float32)))
        now = (i + 1) * chunk / rate
        if realtime:
            time.sleep(max(0.0, started + now - time.monotonic()))
        while deliveries and deliveries[0][0] <= now - chunk / rate:
            at, text, final = deliveries.pop(0)
            verdict = core.push_transcript(text, final, at)
            if verdict:
                return verdict
        verdict = core.push_audio(x)
        if verdict:
            return verdict
        if transcripts is not None:
            continue
        for ev in endpointer.push(x, rate):
            if ev.type is VADEventType.START_OF_SPEECH:
                last_interim = now
                utterance_start = max(0, round((ev.speech_start - 0.2) * rate))
            else:
                transcribe(samples[utterance_start : round(now * rate)], now, True)
        if endpointer.speaking and now - last_interim >= interim_every:
            last_interim = now
            # an interim re-reads the utterance so far, as a streaming STT revises it
            transcribe(samples[utterance_start : round(now * rate)], now, False)
    return core.tick(timeout_seconds) or core.verdict  # type: ignore[return-value]
