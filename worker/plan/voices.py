"""Which voice each TTS of the chain speaks, and at what rate; part of ``resolve``.

The agent's voice slug belongs to one vendor (the voice catalog says which): the chain
starts at that vendor (unless ``tts_model`` pins another), which gets the voice's own id;
every other TTS gets its nearest catalog voice (same language and gender), or its default
voice when it has none, never the slug verbatim. A slug the catalog does not know is sent
as is to every TTS (the plan says so). The speaking rate goes to each TTS that has a knob,
within its range; the plan names those that cannot apply it.
"""

from __future__ import annotations

from dataclasses import replace

from pipelines.providers import VoiceCatalog, vendor_speaking_rate
from worker.plan.model import ProviderChoice


def assign_voices(
    chain: tuple[ProviderChoice, ...],
    slug: str | None,
    catalog: VoiceCatalog | None,
    *,
    language: str,
    pinned: bool,
) -> tuple[tuple[ProviderChoice, ...], list[str]]:
    """The TTS chain, reordered and with each link's ``voice``, and what the plan says."""
    if slug is None:
        return chain, []
    voice = catalog.get(slug) if catalog is not None else None
    if voice is None or catalog is None:
        note = f"tts: voice {slug!r} is not in the voice catalog: sent as is to every TTS"
        return tuple(replace(c, voice=slug) for c in chain), [note] if catalog else []
    notes: list[str] = []
    owned = [c for c in chain if c.vendor == voice.vendor]
    if not owned:
        notes.append(
            f"tts: voice {slug!r} is a {voice.vendor} voice and {voice.vendor} cannot serve "
            "this call: every TTS speaks its nearest voice"
        )
    elif not pinned:
        chain = (*owned, *(c for c in chain if c.vendor != voice.vendor))
    out: list[ProviderChoice] = []
    for choice in chain:
        if choice.vendor == voice.vendor:
            out.append(replace(choice, voice=voice.voice_id))
            continue
        near = catalog.nearest(choice.vendor, voice, language)
        if near is None:
            notes.append(f"tts: {choice.id} has no voice near {slug!r}: its default voice")
            out.append(replace(choice, voice=None))
        else:
            kind = " ".join(x for x in (near.language, near.gender) if x)
            notes.append(f"tts: {choice.id} speaks {near.slug!r} for {slug!r} ({kind})")
            out.append(replace(choice, voice=near.voice_id))
    return tuple(out), notes


def speaking_rate_notes(chain: tuple[ProviderChoice, ...], rate: float | None) -> list[str]:
    """What the plan says about a speaking rate the chain cannot apply as asked."""
    if rate is None:
        return []
    notes = []
    for choice in chain:
        applied = vendor_speaking_rate(choice.vendor, choice.model, rate)
        if applied is None:
            notes.append(
                f"tts_speaking_rate {rate} not applied by {choice.id} (no speaking-rate option)"
            )
        elif applied != rate:
            notes.append(
                f"tts_speaking_rate {rate} applied by {choice.id} as {applied} (its range)"
            )
    return notes
