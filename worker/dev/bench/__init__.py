"""``voice-worker bench``: latency, capacity, audio DSP, AMD and failover benchmarks, each
written as JSON + PNG.
"""
