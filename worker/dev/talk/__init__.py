"""``voice-worker talk``: talk to an agent from a browser page on loopback.

``TalkServer`` serves the page (``static/``, its script bundled with ``livekit-client`` by
``bundle``) and a token endpoint that opens a room and dispatches the agent into it;
``talk()`` starts what that needs on the embedded default (``replay``'s local stack: a
LiveKit server, the offline LLM, a worker) and serves until Ctrl-C.
"""

from worker.dev.talk.bundle import BUNDLE, BundleError, ensure_bundle
from worker.dev.talk.run import talk
from worker.dev.talk.server import TalkServer

__all__ = ["BUNDLE", "BundleError", "TalkServer", "ensure_bundle", "talk"]
