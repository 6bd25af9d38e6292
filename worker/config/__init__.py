"""The boundary: the agent record and the dispatch metadata as validated models (every
spelling of the reference documents), the merge rules between them, and the control-plane
client (HTTP or ``file://``).
"""
