"""Offline phrase evidence for answering machine detection: pocketsphinx constrained to the
language of answered calls.

Open-vocabulary pocketsphinx (a 130k-word general language model) turns 8 kHz telephone
speech into plausible nonsense, so the AMD phrase rules never fire. Keyword spotting
(pocketsphinx ``kws`` search with per-phrase thresholds) was measured too and is no better
on this audio: phrases such as "leave a message" are never spotted at thresholds that do
not already fire on human greetings. What works is decoding with a small trigram language
model built from how calls are answered: voicemail greetings, IVR menus, carrier
announcements and human answers. Human answers are in the corpus on purpose: a short
"hello" must have somewhere to go besides a machine phrase.

``PhraseTranscriber`` is a ``pipelines.amd.Transcriber`` (float32 samples and their rate
in, lowercase text out); the AMD classifier consumes its text through the same
``push_transcript`` path as a streaming cloud STT. The corpus is generic phrasing written
for the product, not the fixtures' texts; ``build_arpa`` turns any corpus into a model.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pocketsphinx
from pocketsphinx import Decoder

from pipelines.audio import Float32Array, float_to_int16, resample, rms_dbfs

MODEL_SAMPLE_RATE: Final = 16000
SILENCE_DBFS: Final = -70.0

_BASE_CORPUS: Final[tuple[str, ...]] = (
    # human answers
    "hello",
    "hello hello",
    "hi",
    "hi there",
    "hey",
    "yes",
    "yeah",
    "yes hello",
    "yeah hello",
    "hello who is this",
    "hello who's this",
    "who is this",
    "who's this",
    "who is calling",
    "who's calling",
    "who's calling please",
    "who am i speaking with",
    "who am i talking to",
    "speaking",
    "yes speaking",
    "this is me",
    "hi this is",
    "hello this is",
    "yes this is",
    "good morning",
    "good afternoon",
    "good evening",
    "hello good morning",
    "how can i help you",
    "how may i help you",
    "can i help you",
    "what can i do for you",
    "go ahead",
    "yes go ahead",
    "can you hear me",
    "sorry i can't hear you",
    "sorry who is this",
    "sorry what",
    "what's up",
    "hang on",
    "hold on a second",
    "one moment",
    "hello is anyone there",
    "hello are you there",
    "hello yes",
    "i'm busy right now",
    "sorry can you say that again",
    # voicemail greetings
    "thanks for calling",
    "you have reached",
    "you've reached",
    "you have reached the voicemail of",
    "you've reached the voice mailbox of",
    "i can't take your call right now",
    "we can't take your call right now",
    "i'm unable to take your call",
    "i am not available right now",
    "i'm not available to take your call",
    "i'm not here right now",
    "we're not here right now",
    "i'm away from the phone",
    "we can't come to the phone right now",
    "sorry i missed your call",
    "sorry we missed your call",
    "please leave a message",
    "leave a message",
    "leave a message after the tone",
    "please leave a message after the beep",
    "leave your message after the tone",
    "please leave your name and number",
    "leave your name number and a brief message",
    "leave me a message",
    "please record your message",
    "record your message at the tone",
    "at the tone please record your message",
    "when you have finished recording hang up",
    "and i'll get back to you",
    "and i will get back to you as soon as possible",
    "and i'll call you back",
    "we will call you back",
    "and we will return your call",
    "i'll return your call as soon as i can",
    "thanks",
    "bye",
    "goodbye",
    # carrier announcements
    "the person you are trying to reach is not available",
    "the number you have dialed is not in service",
    "the number you have called is no longer in service",
    "the subscriber you have dialed is not available",
    "the customer you are calling is unavailable",
    "the mobile number you have called is switched off",
    "your call cannot be completed as dialed",
    "the number you have reached has been disconnected",
    "please try again later",
    "please try your call again",
    "please check the number and try again",
    "the mailbox is full",
    "the mailbox is full and cannot accept messages",
    "this voice mailbox is full",
    "the voicemail box has not been set up",
    "the mailbox has not been set up yet",
    "cannot accept new messages at this time",
    # IVR menus (the option lines are generated from IVR_OPTIONS and IVR_ACTIONS below)
    "welcome to",
    "thank you for calling",
    "thanks for calling",
    "please listen carefully as our menu options have changed",
    "please listen to the following options",
    "please listen closely to the following menu options",
    "if you know your party's extension you may dial it at any time",
    "if you know the extension of the person you are calling dial it now",
    "please enter your account number",
    "please say or enter",
    "your call is important to us",
    "please stay on the line",
    "all of our agents are busy",
    "your call may be recorded for quality purposes",
    "or stay on the line for an operator",
    "press one",
    "press two",
    "press three",
    "press four",
    "press five",
    "press six",
    "press seven",
    "press eight",
    "press nine",
    "press zero",
    "press star",
    "press pound",
)
"""How calls are answered, one utterance a line, lowercase, words in the CMU dictionary."""

IVR_OPTIONS: Final[tuple[str, ...]] = (
    "sales",
    "support",
    "technical support",
    "billing",
    "billing questions",
    "customer service",
    "account information",
    "your account balance",
    "payments",
    "claims",
    "new customers",
    "existing customers",
    "store hours",
    "hours and locations",
    "directions",
    "the pharmacy",
    "prescription refills",
    "appointments",
    "scheduling",
    "a company directory",
    "the operator",
    "orders",
    "order status",
    "returns",
    "shipping",
    "reservations",
    "english",
    "spanish",
    "human resources",
    "medical records",
    "lost or stolen cards",
    "all other questions",
)
"""What an IVR menu offers, as in "for billing, press 2": the common options of banks,
clinics, shops and utilities, not any particular menu."""

IVR_ACTIONS: Final[tuple[str, ...]] = (
    "speak to an operator",
    "speak to a representative",
    "make a payment",
    "check your balance",
    "schedule an appointment",
    "refill a prescription",
    "report an outage",
    "track an order",
    "repeat this menu",
    "return to the main menu",
    "hear these options again",
)
"""What an IVR menu lets you do, as in "to make a payment, press 1"."""

_DIGITS: Final = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero")

IVR_MENU_LINES: Final[tuple[str, ...]] = tuple(
    [f"for {o} press {_DIGITS[i % 10]}" for i, o in enumerate(IVR_OPTIONS)]
    + [f"to {a} press {_DIGITS[(i + 3) % 10]}" for i, a in enumerate(IVR_ACTIONS)]
)
"""One menu line per option and action, the digits cycling: the language model learns the
"for X press N" shape, not which digit goes with which option."""

DOMAIN_CORPUS: Final[tuple[str, ...]] = _BASE_CORPUS + IVR_MENU_LINES
"""How calls are answered, one utterance a line, lowercase, words in the CMU dictionary."""


def build_arpa(sentences: Iterable[str], *, discount: float = 0.5) -> str:
    """A trigram ARPA language model: absolute discounting, interpolated with the lower
    order, written with backoff weights so pocketsphinx can read it."""
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, str]] = Counter()
    tri: Counter[tuple[str, str, str]] = Counter()
    for sentence in sentences:
        w = ["<s>", *sentence.split(), "</s>"]
        uni.update(w[1:])
        bi.update(itertools.pairwise(w))
        tri.update(zip(w, w[1:], w[2:], strict=False))
    vocab = sorted({*uni, "<s>"})
    total, size = sum(uni.values()), len(vocab)
    # add-one unigrams: every word of the corpus stays reachable after any history
    p1 = {w: (uni[w] + 1) / (total + size - 1) for w in vocab}  # <s> is never predicted
    p1["<s>"] = 0.0

    def discounted(
        counts: Counter[tuple[str, ...]], lower: Callable[[tuple[str, ...]], float]
    ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
        by_history: defaultdict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
        for gram, c in counts.items():
            by_history[gram[:-1]][gram[-1]] = c
        probs: dict[tuple[str, ...], float] = {}
        weights: dict[tuple[str, ...], float] = {}
        for history, nexts in by_history.items():
            n = sum(nexts.values())
            mass = discount * len(nexts) / n
            for word, c in nexts.items():
                probs[(*history, word)] = (c - discount) / n + mass * lower((*history[1:], word))
            seen = sum(probs[(*history, w)] for w in nexts)
            seen_lower = sum(lower((*history[1:], w)) for w in nexts)
            weights[history] = (1.0 - seen) / max(1e-9, 1.0 - seen_lower)
        return probs, weights

    p2, bo1 = discounted(Counter(bi), lambda g: p1[g[0]])
    p3, bo2 = discounted(Counter(tri), lambda g: p2.get(g, bo1.get(g[:1], 1.0) * p1[g[1]]))

    def lg(p: float) -> str:
        return "-99.0000" if p <= 0 else f"{math.log10(p):.4f}"

    lines = ["\\data\\", f"ngram 1={size}", f"ngram 2={len(p2)}", f"ngram 3={len(p3)}", ""]
    lines.append("\\1-grams:")
    lines += [f"{lg(p1[w])} {w} {lg(bo1.get((w,), 1.0))}" for w in vocab]
    lines += ["", "\\2-grams:"]
    lines += [f"{lg(p)} {' '.join(g)} {lg(bo2.get(g, 1.0))}" for g, p in sorted(p2.items())]
    lines += ["", "\\3-grams:"]
    lines += [f"{lg(p)} {' '.join(g)}" for g, p in sorted(p3.items())]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _dictionary() -> dict[str, list[str]]:
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    entries: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            entries[line.split(maxsplit=1)[0].split("(")[0]].append(line)
    return entries


class PhraseTranscriber:
    """Pocketsphinx with a language model of ``corpus``: a ``Transcriber`` for AMD.

    Telephone audio is upsampled to the model's 16 kHz without images (``audio.resample``);
    that measured better than an 8 kHz front end on the same acoustic model, whose filter
    bank was trained up to 6.8 kHz. Above the telephone band's 3.4 kHz the upsampled audio
    holds nothing but whatever hiss the line has, so the model's top filter channels read
    a floor that swings with the line; ``dither`` (the RMS of white noise added at 16 kHz,
    seeded per input so a result is reproducible) gives them one steady level instead. It
    lowered the word error on the fixtures' utterances in both halves (0.60 -> 0.52 even,
    0.60 -> 0.48 odd with the older corpus).
    ``language_weight`` and ``word_penalty`` (pocketsphinx ``lw`` and ``wip``) were tuned on
    the even-seed half of ``fixtures/amd`` only. One decoder, serialised by a lock.
    """

    def __init__(
        self,
        corpus: Sequence[str] = DOMAIN_CORPUS,
        *,
        language_weight: float = 6.5,
        word_penalty: float = 0.65,
        dither: float = 0.003,
    ) -> None:
        words = sorted({w for sentence in corpus for w in sentence.split()})
        known = _dictionary()
        missing = [w for w in words if w not in known]
        if missing:
            raise ValueError(f"corpus words not in the pronunciation dictionary: {missing}")
        with tempfile.TemporaryDirectory(prefix="amd-lm-") as tmp:
            lm, dic = Path(tmp) / "calls.arpa", Path(tmp) / "calls.dict"
            lm.write_text(build_arpa(corpus))
            dic.write_text("".join(line + "\n" for w in words for line in known[w]))
            self._decoder = Decoder(
                logfn="/dev/null", lm=str(lm), dict=str(dic), lw=language_weight, wip=word_penalty
            )
        self.vocabulary: frozenset[str] = frozenset(words)
        self.dither = dither
        self._lock = threading.Lock()

    def __call__(self, samples: Float32Array, sample_rate: int) -> str:
        if len(samples) == 0 or rms_dbfs(samples) < SILENCE_DBFS:
            return ""
        wide = resample(samples, sample_rate, MODEL_SAMPLE_RATE)
        if self.dither > 0:
            rng = np.random.default_rng(len(wide))
            wide = wide + (self.dither * rng.standard_normal(len(wide))).astype(np.float32)
        pcm = float_to_int16(wide)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm.tobytes(), False, True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        if hyp is None:
            return ""
        return " ".join(w.split("(")[0] for w in hyp.hypstr.split() if not w.startswith("<"))
