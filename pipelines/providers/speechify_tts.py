"""Speechify TTS with a speaking rate: LiveKit's plugin, its input wrapped in SSML.

Speechify's API has no rate field; its input may be SSML, and ``<prosody rate>`` sets the
speed ("Emotion, Pitch and Speed Rate are configured in the ssml input"). The plugin sends
``synthesize()`` text as one request and ``stream()`` text one request per sentence token,
so the rate wraps the one text, or each sentence through the tokenizer.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from livekit.agents import APIConnectOptions, tokenize
from livekit.agents.tokenize.tokenizer import SentenceStream
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import speechify


def prosody_ssml(text: str, rate: float) -> str:
    """``text`` as SSML spoken at ``rate`` (1.0 = the voice's own), a relative change
    (``1.2`` -> ``<prosody rate="+20%">``); text already in ``<speak>`` is left alone."""
    if text.lstrip().startswith("<speak"):
        return text
    return (
        f'<speak><prosody rate="{round((rate - 1.0) * 100):+d}%">{escape(text)}</prosody></speak>'
    )


class ProsodyTokenizer(tokenize.SentenceTokenizer):
    """A sentence tokenizer whose sentences come out wrapped in ``prosody_ssml``."""

    def __init__(self, inner: tokenize.SentenceTokenizer, rate: float) -> None:
        self._inner = inner
        self._rate = rate

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        return [prosody_ssml(t, self._rate) for t in self._inner.tokenize(text, language=language)]

    def stream(self, *, language: str | None = None) -> SentenceStream:
        return _ProsodyStream(self._inner.stream(language=language), self._rate)


class _ProsodyStream(SentenceStream):
    def __init__(self, inner: SentenceStream, rate: float) -> None:
        super().__init__()
        self._inner = inner
        self._rate = rate

    def push_text(self, text: str) -> None:
        self._inner.push_text(text)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __anext__(self) -> tokenize.TokenData:
        data = await self._inner.__anext__()
        if not data.token.strip():
            return data
        return tokenize.TokenData(
            segment_id=data.segment_id, token=prosody_ssml(data.token, self._rate)
        )


class SpeechifyTTS(speechify.TTS):
    """``speechify.TTS`` speaking at ``speaking_rate`` (None or 1.0: the plain plugin)."""

    def __init__(self, *, speaking_rate: float | None = None, **kwargs: Any) -> None:
        self.speaking_rate = speaking_rate if speaking_rate and speaking_rate != 1.0 else None
        if self.speaking_rate is not None:
            kwargs["tokenizer"] = ProsodyTokenizer(
                tokenize.basic.SentenceTokenizer(), self.speaking_rate
            )
        super().__init__(**kwargs)

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> speechify.tts.ChunkedStream:
        if self.speaking_rate is not None:
            text = prosody_ssml(text, self.speaking_rate)
        return super().synthesize(text, conn_options=conn_options)
