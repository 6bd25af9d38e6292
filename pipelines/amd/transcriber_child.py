"""The phrase-model transcriber as a child process: ``python -m pipelines.amd.transcriber_child
serve``, over the wire of ``pipelines.engines.decoder_child`` (each request one utterance so
far, 16 kHz int16 PCM). ``pipelines.providers.amd_transcripts`` runs it beside a Moonshine
child for a live call's detection window: pocketsphinx holds the GIL while it decodes, so
in the call's process it would stall the call's audio.
"""

from __future__ import annotations

import sys
from typing import BinaryIO, TextIO

import numpy as np

from pipelines.amd.phrase_lm import PhraseTranscriber
from pipelines.audio import Int16Array, int16_to_float
from pipelines.engines.decoder_child import serve_pcm

RATE = 16000


def serve(stdin: BinaryIO, stdout: TextIO) -> int:
    phrases = PhraseTranscriber()
    # build the decoder and run it once before saying ready
    t = np.arange(RATE // 2, dtype=np.float32) / RATE
    phrases((0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32), RATE)

    def transcribe(pcm: Int16Array) -> str:
        return phrases(int16_to_float(pcm), RATE)

    return serve_pcm(transcribe, stdin, stdout, errors=(RuntimeError,))


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m pipelines.amd.transcriber_child serve", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout))
