"""The voice worker's error tree. Every error says whether retrying can help.

    VoiceWorkerError            (retryable: bool)
    ├── ConfigError             bad agent config, dispatch or settings; names the field
    ├── RoutingError            no provider can serve a layer, or an entry cannot be ranked
    ├── ControlPlaneError       the control-plane API or file source failed
    │   ├── AgentNotFound           404 / missing file
    │   ├── Unauthorized            401 / 403
    │   ├── ControlPlaneUnavailable network error, timeout, 5xx, 429 (retryable)
    │   └── InvalidPayload          the answer is not the documented JSON
    └── ProviderError           an STT/LLM/TTS provider failed mid-call (retryable by failover)

Messages name the agent id, field or file at fault and never carry a secret.
"""

from __future__ import annotations


class VoiceWorkerError(Exception):
    """Base of every error raised on purpose by this project."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ConfigError(VoiceWorkerError):
    """Invalid configuration. ``field`` is the dotted path of the offending value, if known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, retryable=False)
        self.field = field


class RoutingError(VoiceWorkerError):
    """A layer cannot be routed: nothing allowed is usable, or an entry is unrankable."""

    def __init__(self, message: str, *, layer: str | None = None) -> None:
        super().__init__(message, retryable=False)
        self.layer = layer


class ControlPlaneError(VoiceWorkerError):
    """The control plane (HTTP API or ``file://`` directory) could not give an answer."""


class AgentNotFound(ControlPlaneError):
    pass


class Unauthorized(ControlPlaneError):
    pass


class ControlPlaneUnavailable(ControlPlaneError):
    retryable = True


class InvalidPayload(ControlPlaneError):
    pass


class ProviderError(VoiceWorkerError):
    """A provider failed; ``layer`` and ``provider`` name it for failover and reports."""

    retryable = True

    def __init__(self, message: str, *, layer: str, provider: str, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)
        self.layer = layer
        self.provider = provider
