"""What the offline LLM (a base model, ``pipelines.providers.local_llm``) is shown, and what
of its answer is kept.

A base model continues text; it does not follow instructions. Shown the agent's prompt
and then the call so far, Gemma 3 270M answered "Oh, you're in the wrong room?" to every
turn. So ``render_transcript`` writes a transcript it can continue:

- the agent's prompt (the system messages), as they are;
- an example call of three exchanges written for the agent's role from its own config
  (``example_exchanges``: who answers, for which business, taken from the prompt and
  the first message, in templates that answer the caller's words in one sentence);
- the call so far (the first message included), ending on ``Agent:``.

``guard_reply`` keeps the first sentence of what it writes (the server stops generating
there, ``sentence_complete``), and replaces an empty, looping or repeated reply with a
polite generic line (``FALLBACK_LINES``), never the same one twice in a row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SPEAKERS = {"user": "Caller", "assistant": "Agent"}
STOP = ["\n", "Caller:", "Agent:"]

FALLBACK_LINES = (
    "Sorry, could you tell me a little more about what you need?",
    "I'm sorry, I didn't quite catch that; could you say it another way?",
)
"""What the agent says instead of an empty or looping reply, alternating."""

MIN_SENTENCE_WORDS = 3
"""A first sentence shorter than this ("Sure.") takes the next one with it."""

_SENTENCE_END = re.compile(r"(?<![\s.][a-zA-Z])[.?!](?=\s|$)")
"""An end mark before a space or the end, not after a one-letter word ("10 a.m.")."""
_WORD = re.compile(r"[a-z0-9']+")
_BUSINESS = re.compile(
    r"\b(?:of|at|for|from|with|to)\s+((?:the\s+)?[A-Z][\w'&-]*(?:\s+[A-Z][\w'&-]*){0,3})"
)
_ROLE = re.compile(r"\byou are\s+((?:the|a|an)\s+)?([^.,;:!?]+)", re.IGNORECASE)
_ROLE_CUT = re.compile(r"\s+(?:of|at|for|from|with|who|that|and|calling|to)\b.*$")


def text_of(content: Any) -> str:
    """OpenAI message content is a string or a list of typed parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: Iterable[Any] = content
    return " ".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Persona:
    """Who answers the phone, as the agent's prompt and first message say it."""

    role: str | None
    """"the front-desk receptionist", "Ava" (None when the prompt names no role)."""
    business: str | None
    """"Acme Dental" (None when neither text names one)."""

    @property
    def introduction(self) -> str:
        if self.role and self.business:
            return f"this is {self.role} at {self.business}"
        if self.business:
            return f"this is {self.business}"
        if self.role:
            return f"this is {self.role}"
        return "you have reached us"


def persona(instructions: str, first_message: str | None) -> Persona:
    """The role from the prompt's "You are ..." and the business from the first
    capitalised name after "of/at/for/from" in the first message or the prompt."""
    role: str | None = None
    if m := _ROLE.search(instructions):
        core = _ROLE_CUT.sub("", m.group(2)).strip()
        if core and len(core.split()) <= 5:
            article = (m.group(1) or "").strip().lower()
            role = f"{article} {core}".strip() if article else core
    business: str | None = None
    for text in (first_message or "", instructions):
        if m := _BUSINESS.search(text):
            business = m.group(1).strip().rstrip(".")
            break
    if role and business and business.lower() in role.lower():
        role = role[: role.lower().index(business.lower())].strip() or None
    return Persona(role, business)


def example_exchanges(p: Persona) -> list[tuple[str, str]]:
    """Three (caller, agent) exchanges for this persona: each reply answers the caller's
    words in one sentence, taking up what they asked about."""
    ours = p.business or "us"
    return [
        ("Hello, who am I speaking with?", f"Hello, {p.introduction}; how can I help you today?"),
        (
            f"I'd like some information about your prices at {ours}.",
            "Happy to help with our prices; what would you like to know about them?",
        ),
        (
            "Can I give you my name and a number to call me back?",
            "Yes, please go ahead with your name and the best number to reach you.",
        ),
    ]


def render_transcript(messages: Sequence[dict[str, Any]]) -> str:
    """The prompt for a base model (see the module): instructions, an example call for
    the agent's role, then the call so far, ending on the agent's turn. Tool calls and
    results are not shown (the model cannot use them)."""
    instructions = _one_line(
        " ".join(
            text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        )
    )
    first = next(
        (text_of(m.get("content")) for m in messages if m.get("role") == "assistant"), None
    )
    lines = [instructions, ""] if instructions else []
    lines.append("An example call, where the agent answers what the caller just said:")
    for caller, agent in example_exchanges(persona(instructions, first)):
        lines += [f"Caller: {caller}", f"Agent: {agent}"]
    lines += ["", "Transcript of a phone call."]
    for m in messages:
        speaker = SPEAKERS.get(str(m.get("role")))
        text = _one_line(text_of(m.get("content")))
        if speaker and text:
            lines.append(f"{speaker}: {text}")
    lines.append("Agent:")
    return "\n".join(lines)


def previous_replies(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The agent's lines so far, oldest first."""
    return [_one_line(text_of(m.get("content"))) for m in messages if m.get("role") == "assistant"]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def first_sentence(text: str) -> str:
    """Up to the first sentence end, taking more while it is under ``MIN_SENTENCE_WORDS``."""
    text = _one_line(text)
    for m in _SENTENCE_END.finditer(text):
        if len(_words(text[: m.end()])) >= MIN_SENTENCE_WORDS:
            return text[: m.end()]
    return text


def sentence_complete(text: str) -> bool:
    """Whether ``text`` (the reply so far) already holds its first sentence: generation
    can stop."""
    text = _one_line(text)
    return any(
        len(_words(text[: m.end()])) >= MIN_SENTENCE_WORDS for m in _SENTENCE_END.finditer(text)
    )


def loops(words: Sequence[str]) -> bool:
    """A word three times running, or a three-word phrase said twice."""
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(trigrams) != len(set(trigrams))


def guard_reply(raw: str, previous: Sequence[str]) -> str:
    """The reply to say: the first sentence of ``raw``, or a fallback line when that is
    empty, loops, or says again what the agent said before in this call."""
    reply = first_sentence(raw.replace("Agent:", " ").replace("Caller:", " "))
    words = _words(reply)
    said_before = {tuple(_words(p)) for p in previous}
    if words and not loops(words) and tuple(words) not in said_before:
        return reply
    last = previous[-1] if previous else ""
    return next(line for line in FALLBACK_LINES if line != last)
