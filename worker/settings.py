"""Worker settings from environment variables and ``.env`` (pydantic-settings).

Every setting has an env var of the same name in upper case; secrets are ``SecretStr`` so
they never print. The defaults describe the embedded default: a local LiveKit server, the
offline provider stack and the ``file://`` control plane shipped in ``fixtures/``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTROL_PLANE = f"file://{REPO_ROOT / 'fixtures' / 'control_plane'}"


class Settings(BaseSettings):
    """Process-wide configuration. Per-agent behaviour comes from the control plane."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # LiveKit
    livekit_url: str = "ws://127.0.0.1:7880"
    """LiveKit server URL the worker registers with."""
    livekit_api_key: str = "devkey"
    livekit_api_secret: SecretStr = SecretStr("secret")
    agent_name: str = "voice-worker"
    """Name jobs are explicitly dispatched to."""
    worker_http_port: int = 8081
    """Health and metrics HTTP port of the worker process (0 picks a free one)."""
    max_concurrent_calls: int = Field(20, ge=1)
    """Call slots per worker process group; load = max(CPU, busy slots)."""
    load_threshold: float = Field(0.75, gt=0, le=1)
    """Above this load LiveKit dispatches no new calls to the worker."""
    num_idle_processes: int = Field(1, ge=0)
    """Job processes kept warm (models loaded) ahead of dispatch."""

    # Control plane
    control_plane_url: str = DEFAULT_CONTROL_PLANE
    """``https://...`` API base, or ``file://DIR`` with agents/, providers.json."""
    control_plane_api_key: SecretStr | None = None
    control_plane_connect_timeout: float = Field(2.0, gt=0)
    control_plane_read_timeout: float = Field(5.0, gt=0)
    control_plane_max_attempts: int = Field(3, ge=1, le=10)

    # Providers: credentials and base URLs (base URLs point plugins at proxies or local servers)
    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    eleven_api_key: SecretStr | None = None
    eleven_base_url: str | None = None
    local_llm_base_url: str = "http://127.0.0.1:8088/v1"
    """OpenAI-compatible llama.cpp server of the offline stack."""
    offline_providers: bool = True
    """Whether the offline stack (pocketsphinx, espeak-ng, llama.cpp) may be routed to."""

    # Per-layer failure deadlines (seconds): a provider silent this long is failed over.
    stt_deadline: float = Field(1.5, gt=0)
    llm_first_token_deadline: float = Field(2.5, gt=0)
    tts_first_byte_deadline: float = Field(1.5, gt=0)
    return_to_primary: bool = False
    """Whether a call moves back to a recovered primary provider mid-call."""

    # Lifecycle
    default_inactivity_timeout: float = Field(30.0, gt=0)
    """Silence tolerance (s) when the agent sets none."""
    pre_call_webhook_timeout: float = Field(2.0, gt=0)
    tool_timeout: float = Field(10.0, gt=0)
    drain_timeout: float = Field(60.0, ge=0)
    spool_dir: Path = Path(".cache/spool")
    """Where post-call reports wait until their webhook answered 2xx."""
    webhook_secret: SecretStr | None = None
    """Organization webhook secret (Standard Webhooks); an agent's own secret wins."""
    webhook_max_attempts: int = Field(6, ge=1)
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_max_elapsed: float = Field(120.0, gt=0)
    """Give up retrying a payload (it stays spooled) after this many seconds."""
    metrics_port: int = 9464
    """Prometheus ``/metrics`` of the worker and all its job processes."""
    log_json: bool = True
    log_level: str = "INFO"
    """Worker log level (``voice-worker dev`` defaults to DEBUG)."""
