"""Development and test tooling, never imported by the runtime (an import-linter contract
says so): ``replay``, the local services, fault injection and the benchmarks.
"""
