"""Background-noise bed (placeholder until the audio-pipeline work lands)."""

PRESETS: dict[str, str] = {}


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(PRESETS))
