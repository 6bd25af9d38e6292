"""Audio stages: PCM helpers, webrtcvad VAD, WSOLA time-stretch, the noise bed and the
agent's output chain. Synchronous numpy cores with thin LiveKit adapters; imports neither
``pipelines.providers`` nor ``worker``.

Import the names from here (``from pipelines.audio import WebRTCVAD``). They resolve on
first use (``pipelines.lazy``): the light children that need only the PCM helpers (the
pocketsphinx decoder) run this file too, and must not import ``livekit.agents`` for the VAD.
"""

from typing import TYPE_CHECKING

from pipelines.lazy import lazy_exports

__all__ = [
    "AGENT",
    "BED_DBFS_AT_FULL_VOLUME",
    "CALLER",
    "DEFAULT_SAMPLE_RATE",
    "PLAYBACK_RATE_RANGE",
    "RECORDING_RATE",
    "WEBRTC_RATES",
    "Audio",
    "AudioFormatError",
    "CallTimeline",
    "Float32Array",
    "FrameMs",
    "Int16Array",
    "NoiseBed",
    "NoiseBedOutput",
    "ProcessingRate",
    "StreamResampler",
    "StretchOutput",
    "Tap",
    "TapInput",
    "TimeStretcher",
    "VADCore",
    "VADCoreEvent",
    "VADOptions",
    "VADSettings",
    "VADUpdate",
    "WebRTCVAD",
    "WebRTCVADStream",
    "detect_segments",
    "float_to_int16",
    "frame_samples",
    "install_output_chain",
    "int16_to_float",
    "load_bed",
    "lowpass_kernel",
    "mix",
    "mix_file",
    "preset_names",
    "processing_rate",
    "read_wav",
    "resample",
    "rms_dbfs",
    "soft_limit",
    "stretch_audio",
    "stretch_rate",
    "track_writer",
    "validate_preset",
    "validate_rate",
    "validate_volume",
    "write_wav",
]

if TYPE_CHECKING:
    from pipelines.audio.noise import (
        BED_DBFS_AT_FULL_VOLUME,
        NoiseBed,
        load_bed,
        mix,
        mix_file,
        preset_names,
        soft_limit,
        validate_preset,
        validate_volume,
    )
    from pipelines.audio.output import (
        DEFAULT_SAMPLE_RATE,
        NoiseBedOutput,
        StretchOutput,
        install_output_chain,
        track_writer,
    )
    from pipelines.audio.pcm import (
        Audio,
        AudioFormatError,
        Float32Array,
        Int16Array,
        StreamResampler,
        float_to_int16,
        int16_to_float,
        lowpass_kernel,
        read_wav,
        resample,
        rms_dbfs,
        write_wav,
    )
    from pipelines.audio.stretch import (
        PLAYBACK_RATE_RANGE,
        TimeStretcher,
        stretch_audio,
        stretch_rate,
        validate_rate,
    )
    from pipelines.audio.tap import (
        AGENT,
        CALLER,
        RECORDING_RATE,
        CallTimeline,
        Tap,
        TapInput,
        frame_samples,
    )
    from pipelines.audio.vad import WebRTCVAD, WebRTCVADStream
    from pipelines.audio.vad_core import VADCore, VADCoreEvent, detect_segments
    from pipelines.audio.vad_options import (
        WEBRTC_RATES,
        FrameMs,
        ProcessingRate,
        VADOptions,
        VADSettings,
        VADUpdate,
        processing_rate,
    )
else:
    # out of type checkers' sight: with a module __getattr__ they would accept any name
    __getattr__ = lazy_exports(
        __name__,
        __all__,
        {
            "noise": (
                "BED_DBFS_AT_FULL_VOLUME",
                "NoiseBed",
                "load_bed",
                "mix",
                "mix_file",
                "preset_names",
                "soft_limit",
                "validate_preset",
                "validate_volume",
            ),
            "output": (
                "DEFAULT_SAMPLE_RATE",
                "NoiseBedOutput",
                "StretchOutput",
                "install_output_chain",
                "track_writer",
            ),
            "pcm": (
                "Audio",
                "AudioFormatError",
                "Float32Array",
                "Int16Array",
                "StreamResampler",
                "float_to_int16",
                "int16_to_float",
                "lowpass_kernel",
                "read_wav",
                "resample",
                "rms_dbfs",
                "write_wav",
            ),
            "stretch": (
                "PLAYBACK_RATE_RANGE",
                "TimeStretcher",
                "stretch_audio",
                "stretch_rate",
                "validate_rate",
            ),
            "tap": (
                "AGENT",
                "CALLER",
                "RECORDING_RATE",
                "CallTimeline",
                "Tap",
                "TapInput",
                "frame_samples",
            ),
            "vad": ("WebRTCVAD", "WebRTCVADStream"),
            "vad_core": ("VADCore", "VADCoreEvent", "detect_segments"),
            "vad_options": (
                "WEBRTC_RATES",
                "FrameMs",
                "ProcessingRate",
                "VADOptions",
                "VADSettings",
                "VADUpdate",
                "processing_rate",
            ),
        },
    )
