"""Mid-call failover inside a layer's ranked allowed providers: ``ProviderChain``, the
per-process ``HealthRegistry`` (circuit breaker) and the per-layer resume rules.
"""
