"""Audio stages: PCM helpers, webrtcvad VAD, WSOLA time-stretch, the noise bed and the
agent's output chain. Synchronous numpy cores with thin LiveKit adapters; imports neither
``pipelines.providers`` nor ``worker``.
"""
