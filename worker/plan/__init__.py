"""``SessionPlan``: every decision about a call, taken once by the pure ``resolve()``, and
the loader that fetches what ``resolve`` reads (agent, tools, catalog, pre-call reply).
"""
