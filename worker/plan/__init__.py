"""``SessionPlan``: every decision about a call, taken once by the pure ``resolve()``, and
the loader that fetches what ``resolve`` reads (agent, tools, catalog, pre-call reply).
"""

from worker.plan.loader import LoadedCall, load_call, open_cached, read_json_file
from worker.plan.model import AMDPlan, ProviderChoice, SessionPlan, plan_to_json
from worker.plan.resolve import (
    APOLOGY,
    DEFAULT_IDLE_REPROMPTS,
    GOODBYE,
    resolve,
)

__all__ = [
    "APOLOGY",
    "DEFAULT_IDLE_REPROMPTS",
    "GOODBYE",
    "AMDPlan",
    "LoadedCall",
    "ProviderChoice",
    "SessionPlan",
    "load_call",
    "open_cached",
    "plan_to_json",
    "read_json_file",
    "resolve",
]
