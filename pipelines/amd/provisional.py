"""A provisional ``human`` before the verdict: the first message starts early (issue 18).

The classifier says ``human`` after ``end_silence`` (~0.75 s) of silence past a short
greeting, and a phone line adds ~0.65 s more (into the room and back): a human would hear
the first message ~1.4 s after their "Hello?". ``ProvisionalRule`` looks at the greeting so
far and says "looks human" much sooner, after ``silence`` (~0.3 s) of it: speech heard,
short (within the classifier's own ``human_max_greeting``), ended (silent now), and no
machine evidence yet (no beep or other tone, no machine phrase in the transcript). The
caller starts the first message at once and keeps listening; the classifier's verdict
still decides, and a machine verdict cuts the message off.

The decision holds only while the greeting stays ended: more speech (100 ms of it, the
classifier's onset), a tone or a machine phrase withdraws it, and the caller stops the
message then. A recorded greeting's pause between two sentences looks like a human's
silence for 0.3 s, then it goes on: withdrawn, the machine heard a fraction of a second
of the message, not all of it before a verdict seconds later. A human who goes on ("Hello?
... Hello?") hears the message from the start at the verdict, as without this rule.

It is a pure rule over ``Greeting`` snapshots (``AMDClassifier.greeting()``), fired and
withdrawn at most once per call; it never replaces the verdict and never delays it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

PROVISIONAL_SILENCE: Final = 0.3
"""Seconds of silence after a short greeting before it provisionally looks human: a
pause between words is shorter, the classifier's end silence (0.75 s) twice as long."""
MIN_SPEECH: Final = 0.2
"""Less speech than this is a click or a breath, not a greeting (the classifier's too)."""


@dataclass(frozen=True, slots=True)
class Greeting:
    """What the detector has heard of the callee so far (seconds of callee audio)."""

    now: float
    speech_seconds: float
    silence_seconds: float
    """Since the callee last spoke; 0 while speaking or before any speech."""
    speaking: bool
    machine_evidence: bool
    """A machine phrase in the transcript (even a weak one, as a business's welcome)."""
    tones: int
    """Narrow-band tones heard (a beep, SIT): no human greeting has one."""
    decided: bool
    """The classifier's verdict is taken: nothing provisional is needed any more."""


@dataclass(frozen=True, slots=True)
class Provisional:
    """The rule's one answer for a call: the greeting looks like a human's."""

    decided_at: float
    """Seconds of callee audio when it fired."""
    speech_seconds: float
    silence_seconds: float
    withdrawn_at: float | None = None
    """Seconds of callee audio when the greeting went on (or a machine sign came)."""

    @property
    def reason(self) -> str:
        return (
            f"short greeting ({self.speech_seconds:.1f} s), "
            f"{self.silence_seconds:.2f} s of silence, no machine evidence yet"
        )

    def to_json(self) -> dict[str, Any]:
        data = {k: None if v is None else round(v, 3) for k, v in asdict(self).items()}
        return {**data, "reason": self.reason}


class ProvisionalRule:
    """Fires once, the first time ``check`` sees a greeting that looks human, and is
    withdrawn once, the first time after that the greeting does not look ended any more."""

    def __init__(
        self,
        *,
        silence: float = PROVISIONAL_SILENCE,
        max_speech: float = 1.8,
        min_speech: float = MIN_SPEECH,
    ) -> None:
        for name, value in (("silence", silence), ("max_speech", max_speech)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"provisional {name} must be > 0, got {value}")
        if not (math.isfinite(min_speech) and 0 <= min_speech <= max_speech):
            raise ValueError(f"provisional min_speech must be in [0, max_speech], got {min_speech}")
        self.silence = silence
        self.max_speech = max_speech
        self.min_speech = min_speech
        self.fired: Provisional | None = None

    def looks_human(self, g: Greeting) -> bool:
        return (
            not g.decided
            and not g.speaking
            and not g.machine_evidence
            and g.tones == 0
            and self.min_speech <= g.speech_seconds <= self.max_speech
            and g.silence_seconds >= self.silence - 1e-9
        )

    def check(self, g: Greeting) -> Provisional | None:
        """The provisional decision the moment it is taken, and again (``withdrawn_at``
        set) the moment it is withdrawn; None otherwise."""
        fired = self.fired
        if fired is None:
            if not self.looks_human(g):
                return None
            self.fired = Provisional(g.now, g.speech_seconds, g.silence_seconds)
            return self.fired
        if fired.withdrawn_at is not None or g.decided:
            return None
        went_on = g.speech_seconds > fired.speech_seconds + 1e-9
        if went_on or g.machine_evidence or g.tones:
            self.fired = replace(fired, withdrawn_at=g.now)
            return self.fired
        return None
