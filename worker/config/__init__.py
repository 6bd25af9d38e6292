"""The boundary: the agent record and the dispatch metadata as validated models (every
spelling of the reference documents), the merge rules between them, and the control-plane
client (HTTP or ``file://``).
"""

from worker.config.agent import AgentConfig, AMDAction, parse_agent, snake
from worker.config.control_plane import (
    CachingControlPlane,
    ControlPlane,
    FileControlPlane,
    HttpControlPlane,
    open_control_plane,
    parse_retry_after,
)
from worker.config.dispatch import Dispatch, fill_placeholders, merge, parse_dispatch
from worker.config.pre_call import PRE_CALL_APPLIED, PRE_CALL_IGNORED, override_dispatch
from worker.config.tools import BUILTINS, ToolPlan, parse_tools
from worker.config.transfers import (
    TransferDestination,
    WarmDestination,
    WarmTransferOptions,
    parse_warm_transfer,
    pick_destination,
    transfer_destinations,
)

__all__ = [
    "BUILTINS",
    "PRE_CALL_APPLIED",
    "PRE_CALL_IGNORED",
    "AMDAction",
    "AgentConfig",
    "CachingControlPlane",
    "ControlPlane",
    "Dispatch",
    "FileControlPlane",
    "HttpControlPlane",
    "ToolPlan",
    "TransferDestination",
    "WarmDestination",
    "WarmTransferOptions",
    "fill_placeholders",
    "merge",
    "open_control_plane",
    "override_dispatch",
    "parse_agent",
    "parse_dispatch",
    "parse_retry_after",
    "parse_tools",
    "parse_warm_transfer",
    "pick_destination",
    "snake",
    "transfer_destinations",
]
