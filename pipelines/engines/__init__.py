"""The offline speech engines as synchronous cores: pocketsphinx and Moonshine (speech to
text) and espeak-ng (text to speech). The local providers, the AMD transcribers and the
loopback servers all build on them.

Import the names from here (``from pipelines.engines import EspeakEngine``). They resolve on
first use (``pipelines.lazy``): ``python -m pipelines.engines.pocketsphinx serve`` runs this
file first, and an eager import of that module here would run it twice.
"""

from typing import TYPE_CHECKING

from pipelines.lazy import lazy_exports

__all__ = [
    "DEFAULT_VOICE",
    "ESPEAK_SAMPLE_RATE",
    "FRIENDLY_VOICES",
    "MOONSHINE_SAMPLE_RATE",
    "POCKETSPHINX_SAMPLE_RATE",
    "SUPPORTED_LANGUAGES",
    "EspeakEngine",
    "EspeakError",
    "MoonshineTranscriber",
    "PocketsphinxEngine",
    "PocketsphinxError",
    "PocketsphinxStream",
    "check_language",
    "espeak_command",
    "normalise_text",
    "parse_wav_header",
    "resolve_voice",
    "speech_spans",
    "voices",
    "words_per_minute",
]

if TYPE_CHECKING:
    from pipelines.engines.espeak import (
        DEFAULT_VOICE,
        ESPEAK_SAMPLE_RATE,
        FRIENDLY_VOICES,
        EspeakEngine,
        EspeakError,
        espeak_command,
        parse_wav_header,
        resolve_voice,
        voices,
        words_per_minute,
    )
    from pipelines.engines.moonshine import (
        MOONSHINE_SAMPLE_RATE,
        MoonshineTranscriber,
        normalise_text,
        speech_spans,
    )
    from pipelines.engines.pocketsphinx import (
        POCKETSPHINX_SAMPLE_RATE,
        SUPPORTED_LANGUAGES,
        PocketsphinxEngine,
        PocketsphinxError,
        PocketsphinxStream,
        check_language,
    )
else:
    # out of type checkers' sight: with a module __getattr__ they would accept any name
    __getattr__ = lazy_exports(
        __name__,
        __all__,
        {
            "espeak": (
                "DEFAULT_VOICE",
                "ESPEAK_SAMPLE_RATE",
                "FRIENDLY_VOICES",
                "EspeakEngine",
                "EspeakError",
                "espeak_command",
                "parse_wav_header",
                "resolve_voice",
                "voices",
                "words_per_minute",
            ),
            "moonshine": (
                "MOONSHINE_SAMPLE_RATE",
                "MoonshineTranscriber",
                "normalise_text",
                "speech_spans",
            ),
            "pocketsphinx": (
                "POCKETSPHINX_SAMPLE_RATE",
                "SUPPORTED_LANGUAGES",
                "PocketsphinxEngine",
                "PocketsphinxError",
                "PocketsphinxStream",
                "check_language",
            ),
        },
    )
