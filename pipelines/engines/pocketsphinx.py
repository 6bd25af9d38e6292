"""Pocketsphinx (its PyPI package ships the US English model) as a synchronous engine: a
thread-safe pool of decoders, an incremental stream, and the decoder child process's loop.

Pocketsphinx decoders are not thread-safe and cost ~0.3 s to load, so the engine keeps a
small pool: each call checks one out, decodes, and returns it. Audio goes in as float32
at any rate and is resampled to the model's 16 kHz int16. ``python -m
pipelines.engines.pocketsphinx serve`` is the child that ``PocketsphinxSTT`` decodes in
(pocketsphinx holds the GIL while it decodes).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, TextIO

import numpy as np
from pocketsphinx import Decoder

from pipelines.audio import (
    Float32Array,
    Int16Array,
    float_to_int16,
    int16_to_float,
    resample,
    rms_dbfs,
)
from pipelines.engines.decoder_child import serve_pcm

POCKETSPHINX_SAMPLE_RATE = 16000
SILENCE_DBFS = -70.0
"""Input quieter than this is treated as silence without decoding."""
SUPPORTED_LANGUAGES = ("en", "en-us", "en-US")
"""The bundled model is US English; other languages would need another acoustic model."""


LIVE_SEARCH = {"fwdflat": False, "beam": 1e-40, "wbeam": 1e-30, "maxhmmpf": 3000}
"""The live decoders' search (streams): the forward pass only, so ending an utterance
costs ~10 ms instead of a second pass over it (~0.2 s), with narrower beams, so decoding
keeps well ahead of the speech (real-time factor ~0.15 instead of ~0.45 here; word error
on espeak sentences 0.56 instead of 0.46). Batch decodes keep the full search."""


class PocketsphinxError(RuntimeError):
    """The decoder could not be created or failed while decoding."""


def check_language(language: str) -> None:
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"language {language!r} is not supported by the bundled pocketsphinx model; "
            f"supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )


class PocketsphinxEngine:
    """Thread-safe transcription over pools of decoders (one per concurrent call).

    Batch calls use batch cepstral-mean normalisation, so a result depends only on its
    own audio, never on what the decoder heard before. Streams use live normalisation
    (needed for partials) from a separate pool."""

    def __init__(self, *, language: str = "en") -> None:
        check_language(language)
        self.language = language
        self._idle: dict[str, list[Decoder]] = {"batch": [], "live": []}
        self._lock = threading.Lock()

    def _checkout(self, cmn: str) -> Decoder:
        with self._lock:
            pool = self._idle[cmn]
            if pool:
                return pool.pop()
        try:
            return Decoder(logfn="/dev/null", cmn=cmn, **(LIVE_SEARCH if cmn == "live" else {}))
        except (RuntimeError, ValueError) as exc:
            raise PocketsphinxError(f"cannot load the pocketsphinx model: {exc}") from exc

    def _checkin(self, cmn: str, decoder: Decoder) -> None:
        with self._lock:
            self._idle[cmn].append(decoder)

    @contextmanager
    def _decoder(self, cmn: str) -> Iterator[Decoder]:
        decoder = self._checkout(cmn)
        try:
            yield decoder
        finally:
            self._checkin(cmn, decoder)

    def warm_up(self) -> None:
        """Loads one decoder now so the first call does not pay for it (~0.3 s)."""
        with self._decoder("batch"):
            pass

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        """Text of the whole utterance, lowercase words separated by spaces ("" if none)."""
        return self.transcribe_pcm(
            float_to_int16(resample(samples, sample_rate, POCKETSPHINX_SAMPLE_RATE))
        )

    def transcribe_pcm(self, pcm: Int16Array) -> str:
        """Like ``transcribe`` for 16 kHz int16 audio that is already at the model's rate."""
        # Digital silence decodes to random words; real rooms are never this quiet.
        if len(pcm) == 0 or rms_dbfs(int16_to_float(pcm)) < SILENCE_DBFS:
            return ""
        with self._decoder("batch") as decoder:
            try:
                decoder.start_utt()
                decoder.process_raw(pcm.tobytes(), False, True)
                decoder.end_utt()
            except RuntimeError as exc:
                raise PocketsphinxError(f"decoding failed: {exc}") from exc
            hyp = decoder.hyp()
            return _clean(hyp.hypstr) if hyp is not None else ""

    def stream(self, sample_rate: int) -> PocketsphinxStream:
        """An incremental recognizer holding one live decoder until ``close()``."""
        return PocketsphinxStream(self, sample_rate)


def _clean(text: str) -> str:
    # Filler and noise tokens look like "<sil>", "[noise]", "(2)" alternates.
    words = [w for w in text.split() if not w.startswith(("<", "[", "++"))]
    return " ".join(w.split("(")[0] for w in words)


class PocketsphinxStream:
    """Incremental recognition: ``push`` audio, read ``partial()`` hypotheses as the
    utterance grows, ``final()`` or ``finish()`` ends it and starts the next.

    Partials come from a live decoder, whose normalisation needs a few seconds of audio
    to settle; ``final()`` re-decodes the utterance in batch mode (RTF ~0.2), which is
    markedly more accurate; ``finish()`` keeps the live decoder's result, at once. Not
    thread-safe; owned by one caller."""

    def __init__(self, engine: PocketsphinxEngine, sample_rate: int) -> None:
        self._engine = engine
        self.sample_rate = sample_rate
        self._decoder: Decoder | None = engine._checkout("live")
        self._utterance: list[Float32Array] = []
        self._in_utt = False

    def push(self, samples: Float32Array) -> None:
        if self._decoder is None:
            raise PocketsphinxError("push() after close()")
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        self._utterance.append(samples)
        pcm = float_to_int16(resample(samples, self.sample_rate, POCKETSPHINX_SAMPLE_RATE))
        self._decoder.process_raw(pcm.tobytes(), False, False)

    def partial(self) -> str:
        hyp = self._decoder.hyp() if self._decoder is not None and self._in_utt else None
        return _clean(hyp.hypstr) if hyp is not None else ""

    def final(self) -> str:
        """Ends the utterance; its text from a batch re-decode (slower, more accurate)."""
        if not self._in_utt:
            return ""
        samples = np.concatenate(self._utterance)
        self.reset()
        return self._engine.transcribe(samples, self.sample_rate)

    def finish(self) -> str:
        """Ends the utterance; its text from the live decoder itself (no re-decode: it
        costs the last search pass, not a decode of the utterance)."""
        if not self._in_utt or self._decoder is None:
            return ""
        try:
            self.reset()  # ends the utterance; its hypothesis stays readable
        except RuntimeError as exc:
            raise PocketsphinxError(f"decoding failed: {exc}") from exc
        hyp = self._decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""

    def reset(self) -> None:
        """Drops the current utterance without a result."""
        if self._in_utt and self._decoder is not None:
            self._decoder.end_utt()
        self._in_utt = False
        self._utterance = []

    def close(self) -> None:
        if self._decoder is None:
            return
        self.reset()
        self._engine._checkin("live", self._decoder)
        self._decoder = None


def serve(stdin: BinaryIO, stdout: TextIO) -> int:
    """The decoder child (``pipelines.engines.decoder_child``): 16 kHz int16 PCM in, text out."""
    engine = PocketsphinxEngine()
    engine.warm_up()
    return serve_pcm(engine.transcribe_pcm, stdin, stdout, errors=(PocketsphinxError,))


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m pipelines.engines.pocketsphinx serve", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout))
