"""The real local services the project starts itself, each a ``ManagedProcess`` bound to
loopback on free ports: a LiveKit server in ``--dev`` mode, the offline LLM (llama.cpp),
Redis, toxiproxy, an S3 server (versitygw) for the call recordings, and the worker itself
(``python -m worker start``).
``python -m worker.dev.services livekit|llama`` runs one until Ctrl-C."""

from worker.dev.services.livekit import (
    LiveKitEndpoint,
    LiveKitServer,
    ensure_built,
    find_livekit_binary,
)
from worker.dev.services.llama import LlamaServer, warm_up_llm
from worker.dev.services.process import (
    CACHE_BIN,
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    free_port,
    http_ok,
)
from worker.dev.services.redis import RedisServer, redis_ping
from worker.dev.services.s3 import S3Server, find_versitygw
from worker.dev.services.toxiproxy import Proxy, ToxiproxyError, ToxiproxyServer
from worker.dev.services.worker import WorkerProcess

__all__ = [
    "CACHE_BIN",
    "LOOPBACK",
    "LiveKitEndpoint",
    "LiveKitServer",
    "LlamaServer",
    "ManagedProcess",
    "Proxy",
    "RedisServer",
    "S3Server",
    "ServiceError",
    "ToxiproxyError",
    "ToxiproxyServer",
    "WorkerProcess",
    "ensure_built",
    "find_livekit_binary",
    "find_versitygw",
    "free_port",
    "http_ok",
    "redis_ping",
    "warm_up_llm",
]
