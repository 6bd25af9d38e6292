"""The warm transfer on a live call: what the ``warm_transfer`` tool runs. The caller is put
on hold, :func:`~worker.call.telephony.warm_transfer.run_warm_transfer` goes through the
destinations, each stage goes to the status webhook (``call.transfer``, ``metadata.stage``)
and the report, and then either the agent leaves (``end_reason`` ``transferred``) or the
caller comes off hold and the LLM is told to take a message."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from worker.call.telephony.hold import CallerHold
from worker.call.telephony.transfer import TRANSFERRED
from worker.call.telephony.warm_transfer import (
    LiveKitDialer,
    fallback_instruction,
    run_warm_transfer,
    summary_from_transcript,
)
from worker.config import WarmTransferOptions

if TYPE_CHECKING:
    from livekit import api, rtc

    from worker.call.lifecycle import CallLifecycle
    from worker.settings import Settings
    from worker.webhooks import WebhookSender

logger = logging.getLogger(__name__)

BRIDGE_JOIN_SECONDS = 5.0
_move_supported: bool | None = None


async def move_supported(lkapi: api.LiveKitAPI) -> bool:
    """Whether the server implements ``MoveParticipant`` (LiveKit Cloud does, the open-source
    server answers "not implemented"); asked once per process with a room that does not
    exist, so it moves no one."""
    global _move_supported
    if _move_supported is None:
        from livekit import api

        try:
            await lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room="voice-worker-move-probe", identity="nobody", destination_room="nowhere"
                )
            )
            _move_supported = True
        except api.ServerError as exc:
            _move_supported = "not implemented" not in exc.message.lower()
    return _move_supported


class WarmTransferTool:
    """The ``ToolCallContext.warm_transfer`` of a call in ``room`` (call it), and the job's
    wait for the bridged call to end (:meth:`until_bridge_ends`)."""

    def __init__(
        self,
        life: CallLifecycle,
        *,
        lkapi: api.LiveKitAPI,
        room: rtc.Room,
        sender: WebhookSender,
        join: Callable[[str, str], Awaitable[rtc.Room]],
    ) -> None:
        self.life = life
        self.lkapi = lkapi
        self.room = room
        self.sender = sender
        self.join = join
        self.bridged_to: str | None = None

    async def _stage(self, name: str, *, destination: str | None, **fields: Any) -> None:
        metadata = {"kind": "warm", "stage": name, "destination": destination}
        metadata.update(
            {k: v for k, v in fields.items() if k not in ("sip_status_code", "sip_status")}
        )
        await self.life.send_status(
            self.sender,
            "call.transfer",
            name,
            sip_status_code=fields.get("sip_status_code"),
            sip_status=fields.get("sip_status"),
            metadata=metadata,
        )

    async def __call__(self, options: WarmTransferOptions, summary: str) -> str | None:
        life = self.life
        session = life.session
        if session is None or session.tts is None:
            raise RuntimeError("no session to transfer from")
        if not summary.strip():
            summary = summary_from_transcript(
                [(m.role, m.text_content or "") for m in session.history.messages()]
            )
        hold = CallerHold(session, self.room, music=options.hold_audio == "music")
        await hold.start()
        bridged = False
        try:
            dialer = LiveKitDialer(
                self.lkapi,
                caller_room=self.room.name,
                options=options,
                tts=session.tts,
                join=self.join,
            )
            result = await run_warm_transfer(
                options,
                summary,
                dial=dialer,
                stage=self._stage,
                rings_again=not await move_supported(self.lkapi),
            )
            bridged = result.bridged_to is not None
        finally:
            await hold.stop(resume=not bridged)
        life.recorder.add_event("transfer", **result.to_event())
        if not bridged:
            return fallback_instruction(result)
        # the agent leaves the conversation; the job stays in the room until the bridge ends
        self.bridged_to = result.bridged_to
        life.end_reason = TRANSFERRED
        asyncio.get_running_loop().call_soon(lambda: session.shutdown(drain=False))
        return None

    async def until_bridge_ends(self, every: float = 0.2) -> None:
        """Returns at once unless the caller was bridged; then waits until one side of the
        bridge hangs up and hangs up the other (deleting the room: livekit-sip keeps a SIP
        leg up in a room however few are left in it). A job shut down meanwhile leaves the
        bridge up."""
        if self.bridged_to is None:
            return
        from livekit import api, rtc

        def sip_parties() -> list[str]:
            return [
                p.identity
                for p in self.room.remote_participants.values()
                if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
            ]

        started = time.monotonic()
        # the bridged leg may not be in this room's view yet when the dial returns
        while len(sip_parties()) < 2 and time.monotonic() - started < BRIDGE_JOIN_SECONDS:
            await asyncio.sleep(every)
        while len(sip_parties()) >= 2 and self.room.isconnected():
            await asyncio.sleep(every)
        self.life.recorder.add_event(
            "bridge_ended",
            destination=self.bridged_to,
            remaining=sip_parties(),
            seconds=round(time.monotonic() - started, 1),
        )
        if not self.room.isconnected():
            # the job is going away (worker shutdown), not the call: the bridge stays up
            logger.warning("left a bridged call in %s without a watcher", self.room.name)
            return
        try:
            await self.lkapi.room.delete_room(api.DeleteRoomRequest(room=self.room.name))
        except api.ServerError as exc:
            logger.warning("could not end the bridged call: %s", exc)


def room_joiner(settings: Settings) -> Callable[[str, str], Awaitable[rtc.Room]]:
    """Connects a participant of this job (kind agent) to another room, e.g. a consultation
    room, with a token minted from the worker's own API key."""

    async def join(room_name: str, identity: str) -> rtc.Room:
        from livekit import api, rtc

        token = (
            api.AccessToken(
                settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
            )
            .with_identity(identity)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room_name))
            .to_jwt()
        )
        room = rtc.Room()
        await room.connect(settings.livekit_url, token)
        return room

    return join
