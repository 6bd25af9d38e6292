"""voice-worker: the LiveKit agent worker that talks on voice-agent calls."""

__version__ = "0.1.0"
