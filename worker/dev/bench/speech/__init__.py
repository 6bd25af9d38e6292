"""Benchmarks of what the offline stack hears and says: ``stt`` (word error rate of the
call STTs, ``voice-worker bench stt``) and ``replies`` (how often the local LLM's replies
stay on topic, ``voice-worker bench replies``). They import the recognisers or the LLM
client, so ``worker.dev.bench`` loads them on first use."""

from worker.dev.bench.speech.replies import bench_replies, content_words, on_topic
from worker.dev.bench.speech.wer import (
    SENTENCES,
    VOICES,
    bench_stt,
    held_out,
    normalise_words,
    word_errors,
)

__all__ = [
    "SENTENCES",
    "VOICES",
    "bench_replies",
    "bench_stt",
    "content_words",
    "held_out",
    "normalise_words",
    "on_topic",
    "word_errors",
]
