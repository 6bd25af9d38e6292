"""Providers: one factory per vendor (LiveKit's own plugins), the lean OpenAI-compatible LLM
client, the local engines' LiveKit adapters, catalog routing, the per-process warmup, and
mid-call failover (``pipelines.providers.failover``).
"""
