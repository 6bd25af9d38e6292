"""The voice catalog: which TTS vendor serves a voice slug, and a vendor's nearest voice.

An agent's ``voice_id`` is a slug of the platform's catalog (001: "Voice slug from the VMS
catalog (see GET /v1/voices)"); a slug belongs to one vendor. The TTS chain starts at that
vendor, and every other vendor in the chain speaks its own nearest voice (same language
and gender), never the slug verbatim, which it does not have.

    GET /v1/voices   (``voices.json`` in a ``file://`` control plane)
    [{"slug": "oliver", "provider": "speechify", "voice_id": "oliver",
      "language": "en-US", "gender": "male"}, ...]      (or {"voices": [...]})

``voice_id`` (the vendor's own id) defaults to the slug; ``language`` and ``gender`` are
optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CatalogVoice:
    slug: str
    vendor: str
    voice_id: str
    """The vendor's own id for the voice (what its API takes)."""
    language: str | None = None
    gender: str | None = None

    @property
    def base_language(self) -> str | None:
        return self.language.split("-")[0].lower() if self.language else None


@dataclass(frozen=True, slots=True)
class VoiceCatalog:
    voices: tuple[CatalogVoice, ...] = ()

    @classmethod
    def from_json(cls, data: Any, *, source: str = "voices") -> VoiceCatalog:
        """Parses ``GET /v1/voices``: a list, or ``{"voices": [...]}``."""
        items = data.get("voices") if isinstance(data, Mapping) else data
        if not isinstance(items, list):
            raise ConfigError("expected a list of voices", field=source)
        voices = []
        for i, item in enumerate(items):
            where = f"{source}[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError("expected an object", field=where)
            slug = item.get("slug") or item.get("id")
            vendor = item.get("provider") or item.get("vendor")
            if not isinstance(slug, str) or not slug:
                raise ConfigError("needs a slug", field=f"{where}.slug")
            if not isinstance(vendor, str) or not vendor:
                raise ConfigError("needs the provider serving it", field=f"{where}.provider")
            language, gender = item.get("language"), item.get("gender")
            voices.append(
                CatalogVoice(
                    slug=slug,
                    vendor=vendor.lower(),
                    voice_id=str(item.get("voice_id") or item.get("provider_voice_id") or slug),
                    language=str(language) if language else None,
                    gender=str(gender).lower() if gender else None,
                )
            )
        return cls(tuple(voices))

    def get(self, slug: str) -> CatalogVoice | None:
        return next((v for v in self.voices if v.slug == slug), None)

    def nearest(self, vendor: str, like: CatalogVoice, language: str) -> CatalogVoice | None:
        """``vendor``'s voice closest to ``like``: same language and gender, else same
        language; ``None`` when the vendor has no voice in the call's language."""
        base = (like.base_language or language.split("-")[0]).lower()
        same_language = [v for v in self.voices if v.vendor == vendor and v.base_language == base]
        same_gender = [v for v in same_language if like.gender and v.gender == like.gender]
        found = same_gender or same_language
        return found[0] if found else None
