"""The caller on hold: their words reach no one (the session's audio input is off, so the
agent does not answer a held caller) and they hear LiveKit's built-in hold music on a track
of its own, or silence."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livekit import rtc
    from livekit.agents import AgentSession
    from livekit.agents.voice.background_audio import BackgroundAudioPlayer, PlayHandle

logger = logging.getLogger(__name__)

HOLD_MUSIC_VOLUME = 0.6


class CallerHold:
    def __init__(self, session: AgentSession[Any], room: rtc.Room, *, music: bool) -> None:
        self.session = session
        self.room = room
        self.music = music
        self._player: BackgroundAudioPlayer | None = None
        self._handle: PlayHandle | None = None
        self._input_was_on = False

    async def start(self) -> None:
        from livekit.agents.voice.background_audio import (
            AudioConfig,
            BackgroundAudioPlayer,
            BuiltinAudioClip,
        )

        self._input_was_on = self.session.input.audio_enabled
        self.session.input.set_audio_enabled(False)
        if not self.music:
            return
        try:
            self._player = BackgroundAudioPlayer()
            await self._player.start(room=self.room)
            self._handle = self._player.play(
                AudioConfig(BuiltinAudioClip.HOLD_MUSIC, volume=HOLD_MUSIC_VOLUME), loop=True
            )
        except Exception:
            # the hold goes on in silence rather than the transfer failing
            logger.exception("hold music did not start")

    async def stop(self, *, resume: bool = True) -> None:
        """Stops the music; ``resume`` turns the caller's audio input back on."""
        if self._handle is not None:
            self._handle.stop()
            self._handle = None
        if self._player is not None:
            with contextlib.suppress(Exception):
                await self._player.aclose()
            self._player = None
        if resume and self._input_was_on:
            self.session.input.set_audio_enabled(True)
