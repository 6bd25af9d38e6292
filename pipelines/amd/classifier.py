"""Answering machine detection: who picked up an outbound call, decided while they speak.

``AMDClassifier`` is the synchronous core. It hears the callee's audio (20 ms frames) and
the STT transcript as they arrive and combines:

- the speech/silence pattern from ``pipelines.audio.VADCore``: a short greeting followed by
  silence is a human waiting for the caller; a long monologue is a recording;
- a beep detector (one narrow-band tone, 400-2000 Hz, 0.2-2 s) and a special information
  tone (SIT, the carrier's three rising tones before "not available" announcements), in
  ``pipelines.amd.detectors``;
- phrases in the transcript ("leave a message", "press 1", "mailbox is full", ...), in
  ``pipelines.amd.phrases``.

It emits one ``Verdict`` as soon as the evidence suffices and never later than
``timeout_seconds`` of callee audio: at the deadline it answers with what it has. A
voicemail verdict waits for the beep or the end of the greeting (the routing action
speaks after either) and says whether a beep was heard (``beep_at``).

Thresholds follow the classic telephony AMD (Asterisk ``app_amd``): a human greeting is
short (under ~1.8 s of speech) and followed by ~0.75 s of silence; a machine greeting is
long and continuous. The transcript separates the machine kinds and settles the lengths
in between; an optional async LLM ``tiebreaker`` (bounded by its own deadline) may settle
what is still ambiguous. ``AMDDetector`` is the async adapter for a live call;
``pipelines.amd.offline.amd_file`` replays a recording with a simulated streaming STT.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from livekit import rtc

from pipelines.amd.detectors import BeepDetector, Tone, is_sit
from pipelines.amd.phrases import TranscriptEvidence, answer_opening, transcript_evidence
from pipelines.amd.provisional import Greeting, Provisional, ProvisionalRule
from pipelines.audio import Float32Array, VADCore, int16_to_float
from pipelines.types import AMD_CATEGORIES, AMDCategory

Tiebreaker = Callable[[str], Awaitable[AMDCategory | None]]
"""Optional async second opinion (e.g. an LLM) on a transcript; None means "cannot tell"."""

FRAME_SECONDS: Final = 0.02
_ONSET_FRAMES: Final = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's one answer for a call."""

    category: AMDCategory
    confidence: float
    """0..1; deadline and length-only verdicts are lower than beep or phrase verdicts."""
    reason: str
    """One human-readable sentence: what decided it."""
    decided_at: float
    """Seconds of callee audio heard when the verdict was taken."""
    beep_at: float | None = None
    """Start of the voicemail beep in seconds of callee audio, if one was heard."""
    evidence: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Features behind the verdict (speech seconds, silence, matched phrase, ...)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "confidence": round(self.confidence, 3),
            "reason": self.reason,
            "decided_at": round(self.decided_at, 3),
            "beep_at": None if self.beep_at is None else round(self.beep_at, 3),
            "evidence": dict(self.evidence),
        }


# ---------------------------------------------------------------------------- classifier


class AMDClassifier:
    """Streaming AMD core. Feed ``push_audio`` (float32 mono at ``sample_rate``) and
    ``push_transcript``; each returns the ``Verdict`` the moment it is taken (then None).
    ``tick(now)`` enforces the deadline when audio stops arriving.

    After the verdict the core keeps listening for the beep: ``beep_at`` and
    ``silence_seconds`` tell a voicemail action when to start speaking.
    """

    def __init__(
        self,
        sample_rate: int,
        timeout_seconds: float = 8.0,
        *,
        human_max_greeting: float = 1.8,
        machine_min_greeting: float = 3.2,
        end_silence: float = 0.75,
        ambiguous_wait: float = 0.2,
        min_greeting_before_beep: float = 0.5,
        vad_aggressiveness: int = 2,
        transcript_wait: float = 0.0,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}")
        self.sample_rate = sample_rate
        self.timeout_seconds = timeout_seconds
        self.human_max_greeting = human_max_greeting
        self.machine_min_greeting = machine_min_greeting
        self.end_silence = end_silence
        self.ambiguous_wait = ambiguous_wait
        self.min_greeting_before_beep = min_greeting_before_beep
        if not (math.isfinite(transcript_wait) and transcript_wait >= 0):
            raise ValueError(f"transcript_wait must be >= 0, got {transcript_wait}")
        self.transcript_wait = transcript_wait
        self._frame_len = max(1, round(FRAME_SECONDS * sample_rate))
        self._frame_s = self._frame_len / sample_rate
        self._vad = VADCore(
            aggressiveness=vad_aggressiveness,
            frame_ms=20,
            sample_rate=16000 if sample_rate >= 16000 else 8000,
            smoothing=0.0,
            min_speech_duration=0.06,
            min_silence_duration=0.3,
            keep_speech_audio=False,
        )
        self._beeps = BeepDetector(sample_rate)
        self.reset()

    def reset(self) -> None:
        self._vad.reset()
        self._beeps.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames = 0
        self._voiced = False
        self._voiced_run = 0
        self._run_counted = False
        self._speech_s = 0.0
        self._first_speech: float | None = None
        self._last_speech_end: float | None = None
        self._pauses = 0
        self._finals: list[str] = []
        self._interim = ""
        self._final_at: float | None = None
        self._evidence = TranscriptEvidence(None, None, False)
        self._evidence_at: float | None = None
        self._tiebreak: AMDCategory | None = None
        self._tiebreak_requested = False
        self._beep: Tone | None = None
        self._verdict: Verdict | None = None

    # -- state a caller may read

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    @property
    def now(self) -> float:
        """Seconds of callee audio processed."""
        return self._frames * self._frame_s

    @property
    def transcript(self) -> str:
        return " ".join([*self._finals, self._interim]).strip()

    @property
    def beep_at(self) -> float | None:
        """Start of the voicemail beep, also when heard after the verdict."""
        return self._beep.start if self._beep else None

    @property
    def beep_over(self) -> bool:
        """A beep was heard and has stopped: the moment a voicemail records speech."""
        return self._beep is not None and not self._beeps.tonal

    @property
    def silence_seconds(self) -> float:
        """Seconds since the callee last spoke (0 while speaking or before any speech)."""
        if self._last_speech_end is None or self._run_counted:
            return 0.0
        return self.now - self._last_speech_end

    def greeting(self) -> Greeting:
        """The greeting so far, for ``ProvisionalRule``."""
        machine = self._evidence.category not in (None, "human")
        return Greeting(
            now=self.now,
            speech_seconds=self._speech_s,
            silence_seconds=self.silence_seconds,
            speaking=self._voiced_run > 0,
            machine_evidence=machine,
            tones=len(self._beeps.tones),
            decided=self._verdict is not None,
        )

    @property
    def tiebreak_request(self) -> str | None:
        """The transcript to ask a tiebreaker about, while the greeting is ambiguous and
        nothing else has decided; None otherwise."""
        if self._verdict is None and self._tiebreak_requested and self.transcript:
            return self.transcript
        return None

    # -- inputs

    def push_audio(self, samples: Float32Array) -> Verdict | None:
        x = samples.astype(np.float32, copy=False)
        if len(self._pending):
            x = np.concatenate((self._pending, x))
        n = len(x) // self._frame_len
        self._pending = x[n * self._frame_len :]
        decided = None
        for i in range(n):
            v = self._frame(x[i * self._frame_len : (i + 1) * self._frame_len])
            decided = decided or v
        return decided

    def push_transcript(self, text: str, is_final: bool, at_seconds: float) -> Verdict | None:
        """A streaming STT result: interim text replaces the previous interim, final text
        is appended. ``at_seconds`` is when it arrived, in seconds of callee audio."""
        if is_final:
            self._final_at = at_seconds
            if text.strip():
                self._finals.append(text.strip())
            self._interim = ""
        else:
            self._interim = text.strip()
        evidence = transcript_evidence(self.transcript)
        if evidence.category is not None and evidence != self._evidence:
            self._evidence = evidence
            self._evidence_at = at_seconds
        if self._verdict is not None:
            return None
        return self._decide(max(at_seconds, self.now))

    def apply_tiebreak(self, category: AMDCategory | None, at_seconds: float) -> Verdict | None:
        """The tiebreaker's answer; used only if nothing decided meanwhile."""
        self._tiebreak = category
        if self._verdict is not None:
            return None
        return self._decide(max(at_seconds, self.now))

    def tick(self, now_seconds: float) -> Verdict | None:
        """Wall-clock progress without audio (a stalled stream): enforces the deadline."""
        if self._verdict is not None:
            return None
        return self._decide(max(now_seconds, self.now))

    # -- per frame

    def _frame(self, frame: Float32Array) -> Verdict | None:
        tone = self._beeps.push_frame(frame)
        self._vad.push(frame, self.sample_rate)
        if self._vad.last_push_frames:
            self._voiced = self._vad.raw_accumulated_speech > 0
        self._frames += 1
        t = self.now
        voiced = self._voiced and not self._beeps.tonal
        if voiced:
            self._voiced_run += 1
            last = self._last_speech_end
            if self._run_counted:
                self._speech_s += self._frame_s
                self._last_speech_end = t
            elif last is not None and t - self._voiced_run * self._frame_s - last <= 0.3:
                # brief voicing right after speech (a consonant, a word's tail) continues it
                self._run_counted = True
                self._speech_s += self._voiced_run * self._frame_s
                self._last_speech_end = t
            elif self._voiced_run == _ONSET_FRAMES:
                # a new onset needs 100 ms of voicing: clicks, noise bursts and webrtcvad's
                # start-up transient are not speech
                onset = t - _ONSET_FRAMES * self._frame_s
                if self._first_speech is None:
                    self._first_speech = onset
                else:
                    self._pauses += 1
                self._run_counted = True
                self._speech_s += _ONSET_FRAMES * self._frame_s
                self._last_speech_end = t
        else:
            self._voiced_run = 0
            self._run_counted = False
        if tone is not None and self._beep is None and self._is_beep(tone):
            self._beep = tone
        if self._verdict is not None:
            return None
        return self._decide(t)

    def _is_beep(self, tone: Tone) -> bool:
        return self._speech_s >= self.min_greeting_before_beep and not is_sit(self._beeps.tones)

    # -- the decision

    def _features(self, now: float) -> dict[str, Any]:
        def r2(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "speech_seconds": round(self._speech_s, 2),
            "silence_seconds": round(self.silence_seconds, 2),
            "first_speech_at": r2(self._first_speech),
            "greeting_end": r2(self._last_speech_end),
            "pauses": self._pauses,
            "phrase": self._evidence.phrase,
            "transcript": self.transcript,
            "tones": [[round(t.start, 2), round(t.frequency)] for t in self._beeps.tones],
        }

    def _emit(self, category: AMDCategory, confidence: float, reason: str, now: float) -> Verdict:
        self._verdict = Verdict(
            category=category,
            confidence=confidence,
            reason=reason,
            decided_at=round(now, 4),
            beep_at=self.beep_at,
            evidence=MappingProxyType(self._features(now)),
        )
        return self._verdict

    def _machine_kind(self) -> AMDCategory:
        ev = self._evidence.category
        return ev if ev in ("machine-ivr", "machine-unavailable") else "machine-vm"

    def _decide(self, now: float) -> Verdict | None:
        ev = self._evidence
        if self._beep is not None:
            kind = self._machine_kind()
            return self._emit(kind, 0.95, f"beep at {self._beep.start:.2f} s after a greeting", now)
        if is_sit(self._beeps.tones):
            return self._emit("machine-unavailable", 0.9, "special information tone", now)
        if ev.strong and ev.category is not None:
            return self._emit(ev.category, 0.9, f"phrase {ev.phrase!r}", now)
        deadline = now >= self.timeout_seconds - 1e-9
        if deadline:
            return self._at_deadline()
        if self._last_speech_end is None or self._voiced_run or self._speech_s < 0.2:
            return None
        silence = now - self._last_speech_end
        if silence < self.end_silence:
            return None
        speech = self._speech_s
        # a business's welcome is an IVR's only in a monologue: "Welcome to Joe's, how can
        # I help?" and then silence is the receptionist (short greetings go by length)
        welcome = ev.category == "machine-ivr" and not ev.strong
        if welcome and speech <= self.human_max_greeting:
            ev = TranscriptEvidence(None, None, False)
        if ev.category is not None and ev.category != "human":
            return self._emit(ev.category, 0.85, f"greeting ended; phrase {ev.phrase!r}", now)
        if ev.category == "human":
            # words addressed to the caller, and no machine phrase: whatever the length
            return self._emit("human", 0.8, f"greeting ended; phrase {ev.phrase!r}", now)
        if speech <= self.human_max_greeting:
            return self._emit("human", 0.85, f"short greeting ({speech:.1f} s) then silence", now)
        if self._transcript_pending(silence):
            return None
        if speech >= self.machine_min_greeting:
            return self._emit(
                "machine-vm", 0.75, f"long greeting ({speech:.1f} s) then silence", now
            )
        # between the two lengths: the tiebreaker, then a lean
        self._tiebreak_requested = True
        if self._tiebreak is not None:
            return self._emit(self._tiebreak, 0.7, "ambiguous greeting; tiebreaker", now)
        if silence < self.end_silence + self.ambiguous_wait:
            return None
        mid = (self.human_max_greeting + self.machine_min_greeting) / 2
        answer = answer_opening(self.transcript)
        if answer and speech >= mid:
            return self._emit(
                "human",
                0.55,
                f"ambiguous greeting ({speech:.1f} s) opening with {answer!r}, leaning human",
                now,
            )
        lean: AMDCategory = "human" if speech < mid else "machine-vm"
        return self._emit(lean, 0.55, f"ambiguous greeting ({speech:.1f} s), leaning {lean}", now)

    def _transcript_pending(self, silence: float) -> bool:
        """A greeting longer than a human's decided by its length alone is a guess its
        words would settle (an IVR menu, a full mailbox and a chatty human are all long):
        until ``transcript_wait`` past the end silence, wait for the STT's final result on
        it (a live STT finalises a segment after its own endpointing and compute, often
        later than the end silence)."""
        last_end = self._last_speech_end
        if last_end is None or silence >= self.end_silence + self.transcript_wait:
            return False
        return self._final_at is None or self._final_at < last_end

    def _at_deadline(self) -> Verdict:
        now = self.timeout_seconds
        ev, speech = self._evidence, self._speech_s
        if ev.category is not None:
            return self._emit(ev.category, 0.7, f"deadline; phrase {ev.phrase!r}", now)
        if self._tiebreak is not None:
            return self._emit(self._tiebreak, 0.6, "deadline; tiebreaker", now)
        if self._first_speech is None:
            return self._emit("uncertain", 0.5, "deadline; no speech heard", now)
        if speech >= self.machine_min_greeting or (
            self._voiced_run and speech > self.human_max_greeting
        ):
            return self._emit("machine-vm", 0.6, f"deadline; {speech:.1f} s of monologue", now)
        if speech <= self.human_max_greeting and not self._voiced_run:
            return self._emit("human", 0.6, f"deadline; short greeting ({speech:.1f} s)", now)
        return self._emit("uncertain", 0.4, f"deadline; {speech:.1f} s of speech, no evidence", now)


# ---------------------------------------------------------------------------- async adapter


class AMDDetector:
    """``AMDClassifier`` for a live call: push LiveKit frames and STT results as they come,
    ``await wait()`` for the verdict. The deadline runs on the event loop clock from
    construction (the moment the callee answered), so a stalled audio track or STT cannot
    hold the call past ``timeout_seconds``; the tiebreaker gets at most
    ``tiebreak_timeout`` and never outlives the deadline. With ``provisional_silence``,
    ``on_provisional`` hears once, before the verdict, that the greeting looks human
    (``ProvisionalRule``, its length bound the classifier's ``human_max_greeting``)."""

    def __init__(
        self,
        sample_rate: int,
        *,
        timeout_seconds: float = 8.0,
        tiebreaker: Tiebreaker | None = None,
        tiebreak_timeout: float = 1.5,
        provisional_silence: float | None = None,
        on_provisional: Callable[[Provisional], None] | None = None,
        **options: float,
    ) -> None:
        if tiebreaker is not None:
            options.setdefault("ambiguous_wait", tiebreak_timeout)
        self.core = AMDClassifier(sample_rate, timeout_seconds, **options)  # type: ignore[arg-type]
        self._tiebreaker = tiebreaker
        self._tiebreak_timeout = tiebreak_timeout
        self._tiebreak_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._done: asyncio.Future[Verdict] = self._loop.create_future()
        self.provisional = (
            None
            if provisional_silence is None
            else ProvisionalRule(
                silence=provisional_silence, max_speech=self.core.human_max_greeting
            )
        )
        self._on_provisional = on_provisional

    def elapsed(self) -> float:
        return self._loop.time() - self._t0

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != self.core.sample_rate:
            raise ValueError(
                f"frame at {frame.sample_rate} Hz, detector built for {self.core.sample_rate} Hz"
            )
        self.push_audio(int16_to_float(pcm))

    def push_audio(self, samples: Float32Array) -> None:
        self._settle(self.core.push_audio(samples))

    def push_transcript(self, text: str, *, is_final: bool) -> None:
        self._settle(self.core.push_transcript(text, is_final, self.core.now))

    async def wait(self) -> Verdict:
        remaining = self.core.timeout_seconds - self.elapsed()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self._done), max(0.0, remaining))
        self._settle(self.core.tick(self.core.timeout_seconds))
        return await self._done

    async def aclose(self) -> None:
        if self._tiebreak_task is not None:
            self._tiebreak_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tiebreak_task

    def _settle(self, verdict: Verdict | None) -> None:
        if verdict is not None and not self._done.done():
            self._done.set_result(verdict)
            if self._tiebreak_task is not None:
                self._tiebreak_task.cancel()
            return
        if self.provisional is not None and not self._done.done():
            early = self.provisional.check(self.core.greeting())
            if early is not None and self._on_provisional is not None:
                self._on_provisional(early)
        request = self.core.tiebreak_request
        if request and self._tiebreaker is not None and self._tiebreak_task is None:
            self._tiebreak_task = asyncio.create_task(self._run_tiebreak(request))

    async def _run_tiebreak(self, transcript: str) -> None:
        assert self._tiebreaker is not None
        budget = min(self._tiebreak_timeout, self.core.timeout_seconds - self.elapsed())
        try:
            category = await asyncio.wait_for(self._tiebreaker(transcript), max(0.0, budget))
        except Exception:  # a failing or slow tiebreaker is only a missing opinion
            category = None
        if category is not None and category in AMD_CATEGORIES:
            self._settle(self.core.apply_tiebreak(category, self.core.now))
