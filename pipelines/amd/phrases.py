"""Transcript phrase evidence for answering machine detection: which machine kind (or a
human) the words of a greeting point to.

The regex tables below are ranked: a strong phrase (a full mailbox, a disconnected number,
an IVR menu) decides on its own; the others name the kind once the greeting's length and
silence let the classifier (``pipelines.amd.classifier``) decide. They read any STT's text:
a streaming cloud STT's or the offline transcribers' (``pipelines.amd.offline``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipelines.types import AMDCategory


@dataclass(frozen=True, slots=True)
class TranscriptEvidence:
    """What a transcript says about who is speaking."""

    category: AMDCategory | None
    """The machine kind the phrases point to, "human", or None without evidence."""
    phrase: str | None
    """The matched phrase, as found in the transcript."""
    strong: bool
    """Decisive on its own (a mailbox-full or IVR menu phrase) without waiting."""


def _pattern(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_UNAVAILABLE_STRONG = _pattern(
    r"mail ?box (?:is |was )?full",
    r"(?:mail ?box|box) is full",
    r"can ?not accept",
    r"cannot accept",
    r"not accepting",
    r"(?:number|customer|subscriber) (?:you (?:have )?(?:dialed|called|calling)|is) ",
    r"(?:no longer|not) in service",
    r"has not (?:been )?set up",
    r"call cannot be completed",
    r"been disconnected",
)
_IVR = _pattern(
    r"press(?:ed)? (?:one|two|three|four|five|six|seven|eight|nine|zero|pound|star|\d)",
    r"for \w+(?: \w+)? press",
    r"(?:menu|options?) (?:have|has) changed",
    r"main menu",
    r"listen carefully",
    r"(?:party'?s|the) extension",
    r"dial (?:it|the extension)",
    r"oprima",
    r"para espa\w+",
)
_VOICEMAIL = _pattern(
    r"leave (?:a|your|me a|the) (?:message|name|brief)",
    r"(?:leave|record) (?:a |your )?message",
    r"after the (?:tone|beep)",
    r"at the (?:tone|beep)",
    r"you(?:'ve| have) reached",
    r"voice ?mail",
    r"get back to you",
    r"call you back",
    r"return your call",
    r"(?:can't|cannot|can not|unable to) (?:take|get to|come to|answer)",
    r"missed (?:you|your call)",
    r"not (?:here|home|available) right now",
)
_IVR_WEAK = _pattern(
    r"welcome to",
)
"""A business's recorded welcome ("welcome to Acme"): an IVR or auto-attendant. Weak: it
names the machine kind once a greeting longer than a human's has ended (a short one is a
receptionist's) or the deadline came, and it ranks below every voicemail phrase
("welcome to the voicemail of ...")."""
_UNAVAILABLE_WEAK = _pattern(
    r"(?:is|are) not available",
    r"is unavailable",
    r"try (?:again|later|your call)",
)
_HUMAN = _pattern(
    r"who(?:'s| is) (?:this|calling|speaking)",
    r"who am i",
    r"speaking",
    r"can i help",
    r"go ahead",
    r"what's up",
    r"hear you",
    r"this is \w+",
    r"\w+ here",
)

_ANSWER = re.compile(r"(?:yes|yeah|yep)\b")
"""A call opened with "yes"/"yeah" is answered by someone replying to the ring; a recorded
greeting addresses an absent caller ("hi", "hello, you've reached", "thank you for
calling"). Weak: it only tips a greeting of ambiguous length with no phrase evidence,
where the length alone would lean machine."""


def transcript_evidence(text: str) -> TranscriptEvidence:
    """Machine kind implied by a transcript. Order matters: "the mailbox is full and cannot
    accept messages" mentions messages but is no voicemail; "I'm not available, leave a
    message" mentions availability but is one."""
    t = _normalised(text)
    for pattern, category, strong in (
        (_UNAVAILABLE_STRONG, "machine-unavailable", True),
        (_IVR, "machine-ivr", True),
        (_VOICEMAIL, "machine-vm", False),
        (_UNAVAILABLE_WEAK, "machine-unavailable", False),
        (_IVR_WEAK, "machine-ivr", False),
        (_HUMAN, "human", False),
    ):
        m = pattern.search(t)
        if m:
            return TranscriptEvidence(category, m.group(0), strong)  # type: ignore[arg-type]
    return TranscriptEvidence(None, None, False)


def answer_opening(text: str) -> str | None:
    """The "yes"/"yeah"/"yep" a transcript opens with (``_ANSWER``), or None."""
    m = _ANSWER.match(_normalised(text))
    return m.group(0) if m else None


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())
