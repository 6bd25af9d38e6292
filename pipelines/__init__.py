"""Audio and provider building blocks for the voice worker.

Nothing here knows about the control plane: ``pipelines`` never imports ``worker``.
"""
