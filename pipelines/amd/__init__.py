"""Answering machine detection: the streaming classifier, its beep/SIT detectors and phrase
evidence, and the offline transcribers ``voice-worker amd`` and ``bench amd`` use. Imports
neither ``pipelines.providers`` nor ``worker``.
"""
