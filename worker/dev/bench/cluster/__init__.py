"""``bench fleet``: calls on LiveKit's distributed engine (two nodes on one Redis, several
worker processes split across them), one worker SIGKILLed mid-call and one drained (SIGTERM)
while its calls are up; the figures say what the callers lost."""

from worker.dev.bench.cluster.fleet import bench_fleet

__all__ = ["bench_fleet"]
