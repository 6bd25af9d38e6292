"""Every decision about a call, taken once at session start:

    plan = resolve(agent, tools, dispatch, catalog, settings)     # pure, no I/O

The ``SessionPlan`` (``worker.plan.model``) is frozen and fully resolved; assembly only
turns it into LiveKit objects.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import SecretStr

from pipelines.audio import preset_names, stretch_rate
from pipelines.errors import ConfigError, RoutingError
from pipelines.providers import Catalog, CatalogEntry, Route, VoiceCatalog, parse_entry, route
from pipelines.types import AMD_CATEGORIES, LAYERS, AMDCategory, Layer
from worker.config import (
    AgentConfig,
    AMDAction,
    Dispatch,
    fill_placeholders,
    merge,
    parse_tools,
    snake,
)
from worker.plan.model import (
    AMDPlan,
    Endpointing,
    LLMSettings,
    NoiseBed,
    ProviderChoice,
    SessionPlan,
    Speech,
    Timeouts,
    Webhook,
)
from worker.plan.voices import assign_voices, speaking_rate_notes
from worker.settings import Settings

DEFAULT_RESPONSE_DELAY = 0.5
NAVIGATOR_RESPONSE_DELAY = 0.75
DEFAULT_TEMPERATURE = 0.7
DEFAULT_CONTEXT_WINDOW = 10
DEFAULT_INTERRUPTION_THRESHOLD = 0.5
STT_OVERRIDES = {
    "whisper-v3": "baseten:whisper-v3",
    "flux": "deepgram:flux",
    "gpt-realtime-whisper": "openai:gpt-realtime-whisper",
}
"""``stt_override`` values -> the catalog entry they pin."""
DEFAULT_IDLE_REPROMPTS = ("Are you still there?",)
GOODBYE = "It seems we got disconnected. Goodbye!"
APOLOGY = "Sorry, we are having technical difficulties and have to end this call. Goodbye."
DEFAULT_AMD_ACTIONS: dict[AMDCategory, AMDAction] = {
    "human": "continue",
    "uncertain": "continue",
    "machine-vm": "voicemail",
    "machine-ivr": "hangup",
    "machine-unavailable": "hangup",
}
VENDOR_CREDENTIALS = {
    "deepgram": "deepgram_api_key",
    "baseten": "baseten_api_key",
    "assemblyai": "assemblyai_api_key",
    "openai": "openai_api_key",
    "elevenlabs": "eleven_api_key",
    "speechify": "speechify_api_key",
    "anthropic": "anthropic_api_key",
    "cartesia": "cartesia_api_key",
}
"""Vendors this worker has a factory for, and the setting holding their key."""
LAYER_SETTINGS = {("llm", "speechify"): ("speechify_llm_api_key", "speechify_llm_base_url")}
"""(layer, vendor) pairs with a key and base URL of their own (key unset: the vendor's):
the platform LLM is an OpenAI-compatible endpoint with no public default URL, so an
entry without its URL is left out."""
NO_SHARED_ENDPOINT = frozenset({"baseten"})
"""Vendors served per deployment: usable only with their ``<vendor>_base_url`` set."""
DEFAULT_PINS: dict[Layer, str] = {"stt": "default_stt", "llm": "default_llm"}
"""The setting naming a layer's worker default, which leads when the agent pins none."""
END_OF_TURN_STTS = frozenset({"deepgram:flux"})
"""STTs whose own end-of-turn events drive the turn (``turn_detection: stt``). Baseten's
Whisper sends no end of speech, so its turns are ended by the VAD path (001's "Ignored on
Flux + Whisper STT" would leave a Whisper turn that never ends)."""
NO_END_OF_SPEECH = frozenset({"baseten"})
"""STT vendors whose plugin sends no end of speech at all."""


def _setting_secret(settings: Settings, name: str) -> SecretStr | None:
    value = getattr(settings, name)
    return value if isinstance(value, SecretStr) and value.get_secret_value() else None


def _credential(settings: Settings, entry: CatalogEntry) -> SecretStr | None:
    own_key, _ = LAYER_SETTINGS.get((entry.layer, entry.vendor), (None, None))
    own = _setting_secret(settings, own_key) if own_key else None
    return own or _setting_secret(settings, VENDOR_CREDENTIALS[entry.vendor])


OFFLINE_FOR_EMBEDDED_DEFAULT = "embedded default (file:// control plane)"
OFFLINE_FOR_ALLOWLIST = "the allowlist names local"
OFFLINE_NOT_ROUTED = (
    "offline engines are routed only for the embedded default (file:// control plane) "
    "or when the allowlist names local"
)


def offline_routing(settings: Settings, agent: AgentConfig, layer: Layer) -> str | None:
    """Why the offline engines may serve ``layer``, or ``None``: a production chain never
    fails over to the toy offline stack unless the agent asks for it (issue 14)."""
    allowlist = agent.allowed_providers.for_layer(layer) or ()
    if any(parse_entry(a, layer)[0] == "local" for a in allowlist):
        return OFFLINE_FOR_ALLOWLIST
    if settings.control_plane_url.startswith("file://"):
        return OFFLINE_FOR_EMBEDDED_DEFAULT
    return None


def _unusable(settings: Settings, agent: AgentConfig) -> Any:
    def check(entry: CatalogEntry) -> str | None:
        if entry.vendor == "local":
            if not settings.offline_providers:
                return "offline providers are disabled"
            return None if offline_routing(settings, agent, entry.layer) else OFFLINE_NOT_ROUTED
        if entry.vendor == "custom":
            ok = agent.llm_provider == "custom" and agent.llm_base_url
            return None if ok else "custom needs llm_provider custom with llm_base_url"
        key = VENDOR_CREDENTIALS.get(entry.vendor)
        if key is None:
            return f"no {entry.vendor} integration in this worker"
        own_key, own_url = LAYER_SETTINGS.get((entry.layer, entry.vendor), (None, None))
        if _credential(settings, entry) is None:
            return f"{(own_key or key).upper()} is not configured"
        if own_url and not getattr(settings, own_url):
            return f"{own_url.upper()} is not configured"
        if entry.vendor in NO_SHARED_ENDPOINT and not getattr(settings, f"{entry.vendor}_base_url"):
            return f"{entry.vendor.upper()}_BASE_URL is not configured"
        return None

    return check


def _choice(
    entry: CatalogEntry, criterion: str, agent: AgentConfig, settings: Settings
) -> ProviderChoice:
    base_url: str | None = None
    api_key: SecretStr | None = None
    if entry.vendor == "custom":
        base_url, api_key = agent.llm_base_url, agent.llm_api_key
    elif entry.vendor == "local" and entry.layer == "llm":
        base_url = settings.local_llm_base_url
    elif entry.vendor in VENDOR_CREDENTIALS:
        prefix = "eleven" if entry.vendor == "elevenlabs" else entry.vendor
        _, own_url = LAYER_SETTINGS.get((entry.layer, entry.vendor), (None, None))
        base_url = getattr(settings, own_url or f"{prefix}_base_url")
        api_key = _credential(settings, entry)
    return ProviderChoice(
        id=entry.id,
        vendor=entry.vendor,
        model=entry.model,
        score=entry.scores.get(criterion, 0.0),
        base_url=base_url,
        api_key=api_key,
    )


def _pin(layer: Layer, agent: AgentConfig) -> str | None:
    if layer == "stt":
        return STT_OVERRIDES[agent.stt_override] if agent.stt_override else agent.stt_model
    if layer == "llm":
        if agent.llm_provider and agent.llm_model:
            return f"{agent.llm_provider}:{agent.llm_model}"
        return agent.llm_model
    return agent.tts_model


CONTEXT_SYNONYMS = {
    "callerNumber": ("from",),
    "dialedNumber": ("to",),
    "forwardedFromNumber": ("forwarded_from",),
    "callId": ("session_id",),
}
"""Other spellings of call-context values in session metadata (the pre-call payload's)."""


def _context_value(value: Any) -> bool:
    return isinstance(value, str | int | float) and "{{" not in str(value)


def call_context(agent: AgentConfig, dispatch: Dispatch) -> dict[str, Any]:
    """Values for ``{{variable}}`` placeholders."""
    values: dict[str, Any] = {
        k: v for k, v in agent.metadata.items() if isinstance(v, str | int | float)
    }
    given = dict(
        agentId=agent.id,
        agentName=agent.name,
        callId=dispatch.call_id,
        callerNumber=dispatch.caller_number,
        dialedNumber=dispatch.dialed_number,
        forwardedFromNumber=dispatch.forwarded_from_number,
        direction=dispatch.direction,
    )
    # 002: "forwardedFromNumber in session metadata": a value the dispatch's own fields
    # leave unset comes from the call's metadata, in any of its spellings, and an unset one
    # never clobbers it
    session = {snake(str(k)): v for k, v in agent.metadata.items() if _context_value(v)}
    for name, value in given.items():
        if value is None:
            keys = (snake(name), *CONTEXT_SYNONYMS.get(name, ()))
            value = next((session[k] for k in keys if k in session), None)
        if value is not None:
            values[name] = value
        elif not _context_value(values.get(name)):
            values.pop(name, None)  # a template's literal "{{name}}" is not a value
    values.update(dispatch.variables)
    # {{memory}} is never left as literal braces: empty unless memory is on and supplied.
    values["memory"] = (dispatch.memory or "") if agent.memory_enabled else ""
    return values


def resolve(
    agent: AgentConfig,
    tools: Any,
    dispatch: Dispatch,
    catalog: Catalog,
    settings: Settings,
    voices: VoiceCatalog | None = None,
) -> SessionPlan:
    """Merges the per-call dispatch into the agent and decides everything about the call;
    ``voices`` (the voice catalog) says which TTS serves the agent's voice.

    Raises ``ConfigError`` (bad values) or ``RoutingError`` (a layer cannot be served).
    """
    agent = merge(agent, dispatch)
    warnings: list[str] = []

    providers: dict[Layer, tuple[ProviderChoice, ...]] = {}
    excluded: dict[Layer, tuple[tuple[str, str], ...]] = {}
    check = _unusable(settings, agent)
    for layer in LAYERS:
        ranking = functools.partial(
            route,
            layer,
            catalog,
            allowlist=agent.allowed_providers.for_layer(layer),
            optimize_for=agent.optimize_for,
            language=agent.language,
            unusable=check,
        )
        pin = _pin(layer, agent)
        default = getattr(settings, DEFAULT_PINS[layer]) if layer in DEFAULT_PINS else None
        r: Route | None = None
        default_down: RoutingError | None = None
        if pin is None and default:
            # the worker's default (001: the platform LLM; the STT default) leads when
            # allowed and usable; else the usual ranking, and the plan says why not
            try:
                r = ranking(pin=default)
            except RoutingError as exc:
                default_down = exc
        r = r or ranking(pin=pin)
        if default_down is not None and not any(pid == default for pid, _ in r.excluded):
            warnings.append(f"{layer}: default {default} not used ({default_down})")
        providers[layer] = tuple(_choice(e, agent.optimize_for, agent, settings) for e in r.chain)
        excluded[layer] = r.excluded
        warnings += [f"{layer}: left out {pid} ({why})" for pid, why in r.excluded]
    providers["tts"], voice_notes = assign_voices(
        providers["tts"],
        agent.voice_id,
        voices,
        language=agent.language,
        pinned=_pin("tts", agent) is not None,
    )
    warnings += voice_notes

    values = call_context(agent, dispatch)
    prompt, unknown_p = fill_placeholders(agent.prompt, values)
    first, unknown_f = (
        fill_placeholders(agent.first_message, values) if agent.first_message else (None, ())
    )
    unresolved = tuple(dict.fromkeys(unknown_p + unknown_f))
    if unresolved:
        warnings.append(
            "unknown placeholders left as written: "
            + ", ".join("{{" + n + "}}" for n in unresolved)
        )
    metadata = {
        k: fill_placeholders(v, values)[0] if isinstance(v, str) else v
        for k, v in agent.metadata.items()
    }

    navigator = agent.navigator_mode
    threshold = (
        agent.interruption_threshold
        if agent.interruption_threshold is not None
        else DEFAULT_INTERRUPTION_THRESHOLD
    )
    stt_head = providers["stt"][0]
    semantic = stt_head.id in END_OF_TURN_STTS
    if semantic and agent.response_delay_seconds is not None:
        warnings.append(f"response_delay_seconds ignored: {stt_head.id} decides end of turn")
    mute = [c.id for c in providers["stt"] if c.vendor in NO_END_OF_SPEECH]
    if semantic and mute:
        warnings.append(
            f"stt: turns end on {stt_head.id}'s end-of-turn events; {', '.join(mute)} "
            "sends none, so a call failed over to it hears no end of turn"
        )
    endpointing = Endpointing(
        vad_aggressiveness=3 if navigator else 2,
        min_speech_duration=0.1,
        min_silence_duration=0.25,
        min_delay=(
            0.0  # 001: the response delay is "Ignored on Flux"
            if semantic
            else agent.response_delay_seconds
            if agent.response_delay_seconds is not None
            else NAVIGATOR_RESPONSE_DELAY
            if navigator
            else DEFAULT_RESPONSE_DELAY
        ),
        max_delay=6.0 if navigator else 3.0,
        allow_interruptions=not navigator,
        min_interruption_duration=round(0.1 + 0.9 * threshold, 3),
        turn_detection="stt" if semantic else "vad",
        end_of_turn_by=stt_head.id if semantic else None,
    )

    preset = agent.background_noise_preset
    noise_bed: NoiseBed | None = None
    if preset:
        known = preset_names()
        if preset not in known:
            raise ConfigError(
                f"unknown preset {preset!r}; known: {', '.join(known)}",
                field="background_noise_preset",
            )
        volume = agent.background_noise_volume
        noise_bed = NoiseBed(preset, 0.1 if volume is None else volume) if volume != 0 else None

    amd: AMDPlan | None = None
    if agent.amd is not None and agent.amd.mode == "agent" and dispatch.direction != "outbound":
        # 001: "AMD routing config for outbound voice agents": an inbound caller (or a
        # browser) would hear silence up to timeout_seconds before the first message.
        warnings.append(f"amd: off ({dispatch.direction or 'no direction'}: outbound calls only)")
    elif agent.amd is not None and agent.amd.mode == "agent":
        actions = {**DEFAULT_AMD_ACTIONS, **agent.amd.actions}
        if actions.get("machine-ivr") == "hangup" and navigator:
            actions["machine-ivr"] = "navigate"
        amd = AMDPlan(
            timeout_seconds=agent.amd.timeout_seconds,
            actions={c: actions[c] for c in AMD_CATEGORIES},
            voicemail_message=agent.amd.voicemail_message,
            greet_immediately=agent.amd.greet_immediately,
            llm_tiebreaker=agent.amd.llm_tiebreaker,
            max_navigation_attempts=agent.amd.max_navigation_attempts,
        )

    if dispatch.tools is not None:
        tools = dispatch.tools
    tool_plans = list(
        parse_tools(
            tools if tools is not None else agent.tools or [],
            tool_url=agent.tool_url,
        )
    )
    if agent.tools and tools is not None and dispatch.tools is None:
        tool_plans += [
            t
            for t in parse_tools(agent.tools, tool_url=agent.tool_url)
            if t.name not in {p.name for p in tool_plans}
        ]
    names = {t.name for t in tool_plans}
    builtins = ["end_call"]
    if navigator or (amd and "navigate" in amd.actions.values()):
        builtins.append("send_dtmf")
    # worker.config.tools owns the built-ins' schemas; worker.call.tools' handlers read them.
    tool_plans += parse_tools(
        [{"builtin": name} for name in builtins if name not in names], tool_url=None
    )

    webhooks: dict[str, Webhook] = {}
    for kind in ("pre_call", "status", "post_call"):
        target = getattr(agent.webhooks, kind)
        if target is not None and target.url:
            webhooks[kind] = Webhook(target.url, target.secret or agent.webhook_secret)
    if "post_call" not in webhooks and agent.webhook_url:
        webhooks["post_call"] = Webhook(agent.webhook_url, agent.webhook_secret)

    inactivity = (
        float(agent.inactivity_timeout_seconds)
        if agent.inactivity_timeout_seconds
        else settings.default_inactivity_timeout
    )
    speaking_rate = agent.tts_speaking_rate
    warnings += speaking_rate_notes(
        providers["tts"], None if speaking_rate == 1.0 else speaking_rate
    )
    return SessionPlan(
        agent_id=agent.id or dispatch.agent_id,
        agent_name=agent.name,
        call_id=dispatch.call_id,
        direction=dispatch.direction,
        language=agent.language,
        optimize_for=agent.optimize_for,
        prompt=prompt,
        first_message=first,
        providers=providers,
        excluded_providers=excluded,
        llm=LLMSettings(
            temperature=agent.temperature if agent.temperature is not None else DEFAULT_TEMPERATURE,
            max_tokens=agent.max_tokens,
            context_window=agent.context_window or DEFAULT_CONTEXT_WINDOW,
            extra_body=agent.llm_extra_body,
        ),
        speech=Speech(
            voice=agent.voice_id,
            speaking_rate=None if speaking_rate == 1.0 else speaking_rate,
            playback_rate=stretch_rate(agent.tts_playback_rate),
        ),
        endpointing=endpointing,
        noise_bed=noise_bed,
        amd=amd,
        navigator_mode=navigator,
        tools=tuple(tool_plans),
        timeouts=Timeouts(
            inactivity=inactivity,
            stt_deadline=settings.stt_deadline,
            llm_first_token_deadline=settings.llm_first_token_deadline,
            tts_first_byte_deadline=settings.tts_first_byte_deadline,
            return_to_primary=settings.return_to_primary,
        ),
        webhooks=webhooks,
        webhook_secret=agent.webhook_secret,
        save_audio_recording=agent.save_audio_recording,
        memory_enabled=agent.memory_enabled,
        ivr_memory=agent.ivr_memory_enabled,
        metadata=metadata,
        text_replacements=tuple((r.find, r.replace) for r in dispatch.text_replacements),
        idle_reprompts=tuple(dispatch.idle_reprompts) or DEFAULT_IDLE_REPROMPTS,
        unresolved_placeholders=unresolved,
        warnings=tuple(warnings),
        offline_engines={
            layer: why
            for layer in LAYERS
            if any(c.vendor == "local" for c in providers[layer])
            and (why := offline_routing(settings, agent, layer))
        },
    )
