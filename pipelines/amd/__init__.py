"""Answering machine detection: the streaming classifier, its beep/SIT detectors and phrase
evidence, and the offline transcribers ``voice-worker amd`` and ``bench amd`` use. Imports
neither ``pipelines.providers`` nor ``worker``.
"""

from pipelines.amd.classifier import FRAME_SECONDS, AMDClassifier, AMDDetector, Tiebreaker, Verdict
from pipelines.amd.detectors import BeepDetector, Tone, is_sit
from pipelines.amd.offline import (
    Transcriber,
    amd_file,
    moonshine_phrases_transcriber,
    moonshine_transcriber,
    phrase_transcriber,
    pocketsphinx_transcriber,
)
from pipelines.amd.phrase_lm import (
    DOMAIN_CORPUS,
    IVR_ACTIONS,
    IVR_MENU_LINES,
    IVR_OPTIONS,
    PhraseTranscriber,
    build_arpa,
)
from pipelines.amd.phrases import TranscriptEvidence, answer_opening, transcript_evidence
from pipelines.amd.provisional import (
    PROVISIONAL_SILENCE,
    Greeting,
    Provisional,
    ProvisionalRule,
)

__all__ = [
    "DOMAIN_CORPUS",
    "FRAME_SECONDS",
    "IVR_ACTIONS",
    "IVR_MENU_LINES",
    "IVR_OPTIONS",
    "PROVISIONAL_SILENCE",
    "AMDClassifier",
    "AMDDetector",
    "BeepDetector",
    "Greeting",
    "PhraseTranscriber",
    "Provisional",
    "ProvisionalRule",
    "Tiebreaker",
    "Tone",
    "Transcriber",
    "TranscriptEvidence",
    "Verdict",
    "amd_file",
    "answer_opening",
    "build_arpa",
    "is_sit",
    "moonshine_phrases_transcriber",
    "moonshine_transcriber",
    "phrase_transcriber",
    "pocketsphinx_transcriber",
    "transcript_evidence",
]
