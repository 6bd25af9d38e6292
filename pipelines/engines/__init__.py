"""The offline speech engines as synchronous cores: pocketsphinx and Moonshine (speech to
text) and espeak-ng (text to speech). The local providers, the AMD transcribers and the
loopback servers all build on them.
"""
