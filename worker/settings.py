"""Worker settings from environment variables and ``.env`` (pydantic-settings).

Every setting has an env var of the same name in upper case; secrets are ``SecretStr`` so
they never print. The defaults describe the embedded default: a local LiveKit server, the
offline provider stack and the ``file://`` control plane shipped in ``fixtures/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTROL_PLANE = f"file://{REPO_ROOT / 'fixtures' / 'control_plane'}"
DEFAULT_RECORDINGS_URL = f"file://{REPO_ROOT / '.cache' / 'recordings'}"


class Settings(BaseSettings):
    """Process-wide configuration. Per-agent behaviour comes from the control plane."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # LiveKit
    livekit_url: str = "ws://127.0.0.1:7880"
    """LiveKit server URL the worker registers with."""
    livekit_api_key: str = "devkey"
    """LiveKit API key (``--dev`` servers use ``devkey``)."""
    livekit_api_secret: SecretStr = SecretStr("secret")
    """LiveKit API secret."""
    agent_name: str = "voice-worker"
    """Name jobs are explicitly dispatched to."""
    worker_http_port: int = 8081
    """Health and metrics HTTP port of the worker process (0 picks a free one)."""
    max_concurrent_calls: int = Field(20, ge=1)
    """Call slots per worker process group; the load reported to LiveKit is busy/slots."""
    load_threshold: float = Field(0.75, gt=0, le=1)
    """Above this load LiveKit dispatches no new calls to the worker."""
    num_idle_processes: int = Field(1, ge=0)
    """Job processes kept warm (models loaded) ahead of dispatch."""

    # Control plane
    control_plane_url: str = DEFAULT_CONTROL_PLANE
    """``https://...`` API base, or ``file://DIR`` with agents/, providers.json, voices.json."""
    control_plane_api_key: SecretStr | None = None
    """Bearer key for the control-plane API."""
    control_plane_connect_timeout: float = Field(2.0, gt=0)
    """Seconds to connect to the control plane."""
    control_plane_read_timeout: float = Field(5.0, gt=0)
    """Seconds to wait for each read from the control plane."""
    control_plane_max_attempts: int = Field(3, ge=1, le=10)
    """Attempts per request (network errors, 5xx and 429 are retried with backoff)."""

    # Providers: credentials and base URLs (base URLs point plugins at proxies or local servers)
    deepgram_api_key: SecretStr | None = None
    """Deepgram key; without it Deepgram entries are left out of every chain."""
    deepgram_base_url: str | None = None
    """Deepgram live URL (``.../v1/listen``) for a proxy or a local server; Flux is served
    on the same host's ``/v2/listen``."""
    baseten_api_key: SecretStr | None = None
    """Baseten key; without it Baseten entries are left out of every chain."""
    baseten_base_url: str | None = None
    """WebSocket of the streaming Whisper deployment
    (``wss://model-ID.api.baseten.co/environments/production/websocket``); Baseten has no
    shared endpoint, so without it Baseten entries are left out too."""
    assemblyai_api_key: SecretStr | None = None
    """AssemblyAI key; without it AssemblyAI entries are left out of every chain."""
    assemblyai_base_url: str | None = None
    """AssemblyAI streaming base (``wss://streaming.assemblyai.com``; the EU one, a proxy)."""
    default_stt: str | None = "baseten:whisper-v3"
    """The worker's default STT stack (001: "today: whisper-v3"): leads the chain of an
    agent without ``stt_override``/``stt_model`` when allowed and usable (else the ranking
    decides and the plan says why); empty: ranking only."""
    openai_api_key: SecretStr | None = None
    """OpenAI key; without it OpenAI entries are left out of every chain."""
    openai_base_url: str | None = None
    """OpenAI API base (``.../v1``) for a proxy or a compatible server."""
    eleven_api_key: SecretStr | None = None
    """ElevenLabs key; without it ElevenLabs entries are left out of every chain."""
    eleven_base_url: str | None = None
    """ElevenLabs API base (``.../v1``)."""
    speechify_api_key: SecretStr | None = None
    """Speechify key (TTS); without it Speechify TTS entries are left out of every chain."""
    speechify_base_url: str | None = None
    """Speechify API base (``https://api.speechify.ai``) for a proxy or a local server."""
    speechify_llm_base_url: str | None = None
    """OpenAI-compatible API base (``.../v1``) of the platform LLM (``speechify:kimi-k2.6``);
    it has no public default, so without it that entry is left out of every chain."""
    speechify_llm_api_key: SecretStr | None = None
    """Key of the platform LLM endpoint; unset: ``SPEECHIFY_API_KEY``."""
    default_llm: str | None = "speechify:kimi-k2.6"
    """LLM (``vendor:model``) leading the chain when the agent names none, as the platform's
    default does at dispatch; when this worker cannot use it the chain is ranked as usual."""
    cartesia_api_key: SecretStr | None = None
    """Cartesia key; without it Cartesia entries are left out of every chain."""
    cartesia_base_url: str | None = None
    """Cartesia API base (``https://api.cartesia.ai``) for a proxy or a local server."""
    anthropic_api_key: SecretStr | None = None
    """Anthropic key; without it Anthropic entries are left out of every chain."""
    anthropic_base_url: str | None = None
    """Anthropic API base (``https://api.anthropic.com``) for a proxy or a local server."""
    local_llm_base_url: str = "http://127.0.0.1:8088/v1"
    """OpenAI-compatible llama.cpp server of the offline stack."""
    offline_providers: bool = True
    """Whether the offline stack (pocketsphinx, espeak-ng, llama.cpp) may be routed to."""

    # Per-layer failure deadlines (seconds): a provider silent this long is failed over.
    stt_deadline: float = Field(1.5, gt=0)
    """No STT result this long while the caller speaks: fail over."""
    llm_first_token_deadline: float = Field(2.5, gt=0)
    """No first LLM token this long after the request: fail over."""
    tts_first_byte_deadline: float = Field(1.5, gt=0)
    """No first TTS audio this long after the text: fail over."""
    return_to_primary: bool = False
    """Whether a call moves back to a recovered primary provider mid-call."""

    # Lifecycle
    default_inactivity_timeout: float = Field(30.0, gt=0)
    """Silence tolerance (s) when the agent sets none."""
    pre_call_webhook_timeout: float = Field(2.0, gt=0)
    """Deadline of the pre-call webhook; past it the call goes on with its own config."""
    drain_timeout: float = Field(60.0, ge=0)
    """On SIGTERM, seconds active calls may go on before they are ended with a goodbye."""
    spool_dir: Path = Path(".cache/spool")
    """Where post-call reports wait until their webhook answered 2xx."""
    report_dir: Path | None = None
    """Also writes each call's report here as ``<call id>.json`` (``voice-worker replay`` does)."""
    webhook_secret: SecretStr | None = None
    """Organization webhook secret (Standard Webhooks); an agent's own secret wins."""
    webhook_max_attempts: int = Field(6, ge=1)
    """Delivery attempts per webhook payload (network errors, 5xx, 429)."""
    webhook_timeout: float = Field(10.0, gt=0)
    """Seconds per webhook delivery attempt."""
    webhook_max_elapsed: float = Field(120.0, gt=0)
    """Give up retrying a payload (it stays spooled) after this many seconds."""

    # Calls that outlive their worker (a fleet sharing Redis)
    redis_url: SecretStr | None = None
    """``redis://[:PASSWORD@]HOST:PORT/DB`` (secret: it may hold a password): each call
    holds a lease and a checkpoint there, and every worker takes over calls whose worker
    died; unset, a call dies with its worker."""
    call_lease_seconds: float = Field(1.5, ge=0.5, le=30)
    """A call's lease in Redis, renewed every quarter of it; a worker silent this long
    loses its calls to the others."""

    # Call recording (agents with save_audio_recording)
    recordings_url: str = DEFAULT_RECORDINGS_URL
    """``s3://bucket/prefix`` (with the endpoint and keys below) or ``file://DIR``."""
    recordings_endpoint_url: str | None = None
    """S3-compatible server (``http://127.0.0.1:7070``); unset: AWS S3."""
    recordings_access_key_id: str | None = None
    """S3 access key id; unset: boto3's usual sources (environment, instance role)."""
    recordings_secret_access_key: SecretStr | None = None
    """S3 secret access key."""
    recordings_region: str = "us-east-1"
    """S3 region."""
    recording_channels: Literal["stereo", "mix"] = "stereo"
    """``stereo``: caller left, agent right (what QA tools expect); ``mix``: one channel."""
    metrics_port: int = 9464
    """Prometheus ``/metrics`` of the worker and all its job processes."""
    log_json: bool = True
    """JSON log lines (with room, job and agent ids) instead of colored text."""
    log_level: str = "INFO"
    """Worker log level (``voice-worker dev`` defaults to DEBUG)."""
