"""One job = one call: the entrypoint (job glue), session assembly, lifecycle (pre-call,
idle, hangup, report), AMD routing, tools, webhooks, the report and metrics.
"""
