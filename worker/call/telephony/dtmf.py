"""Keys the caller presses (RFC 2833 through livekit-sip: the room's ``sip_dtmf_received``).

:class:`CallerDigits` takes every digit once. While a ``collect_digits`` tool call waits
(:meth:`CallerDigits.collect`: N digits, a terminator or a timeout, for PINs and menus),
digits go to it; otherwise they are debounced into one user turn the LLM sees, ``"The
caller pressed 1 2 3 4 #"`` (a terminator key ends the turn at once). Every digit, pressed
or sent, is a ``dtmf`` event in the report (``direction``, ``digit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livekit import rtc
    from livekit.agents import AgentSession

logger = logging.getLogger(__name__)

DTMF_CODES = {str(d): d for d in range(10)} | {
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
"""RFC 4733 event codes of the keypad's keys."""
DEBOUNCE_SECONDS = 1.5
"""Pause after the caller's last key at which their keys become one turn: a caller types
a 4-digit PIN in about 2 s, one key every 0.3-0.8 s."""
TERMINATORS = "#"
"""Keys that end a turn of digits at once (the usual "then press pound")."""
COLLECT_TIMEOUT_SECONDS = 10.0
MAX_COLLECT_SECONDS = 60.0
MAX_DIGITS = 32

EventRecorder = Callable[..., object]
"""``record(type, **data)``: ``CallRecorder.add_event`` fits."""


def turn_text(digits: str) -> str:
    """What the LLM sees for a turn of keys."""
    return "The caller pressed " + " ".join(digits)


class CallerDigits:
    """Routes the caller's keys to a waiting ``collect_digits`` or, debounced, to a turn.

    ``on_turn(text)`` gets each finished turn (:meth:`attach` makes it a
    ``session.generate_reply(user_input=...)``). Synchronous push, so the room's event
    callback can call it directly; timers run on the running event loop.
    """

    def __init__(
        self,
        *,
        on_turn: Callable[[str], object] | None = None,
        record_event: EventRecorder | None = None,
        debounce_seconds: float = DEBOUNCE_SECONDS,
        terminators: str = TERMINATORS,
    ) -> None:
        self._on_turn = on_turn
        self._record = record_event
        self.debounce_seconds = debounce_seconds
        self.terminators = terminators
        self._pending = ""
        """Keys pressed since the last turn, not collected by a tool."""
        self._timer: asyncio.TimerHandle | None = None
        self._collect: _Collection | None = None

    def push(self, digit: str) -> None:
        """One key from the caller."""
        digit = digit.upper()
        if digit not in DTMF_CODES:
            logger.warning("ignored a DTMF event that is no key: %r", digit)
            return
        self._event(direction="received", digit=digit)
        if self._collect is not None and not self._collect.done.done():
            self._collect.add(digit)
            return
        self._pending += digit
        self._cancel_timer()
        if digit in self.terminators:
            self.flush()
        else:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.debounce_seconds, self.flush)

    def flush(self) -> None:
        """The keys pressed so far become a turn now."""
        self._cancel_timer()
        digits, self._pending = self._pending, ""
        if digits and self._on_turn is not None:
            self._on_turn(turn_text(digits))

    def attach(
        self,
        room: rtc.Room,
        session: AgentSession[Any],
        *,
        reply_gate: asyncio.Event | None = None,
    ) -> None:
        """Takes the keys of ``room``'s SIP participants; each turn is a reply of
        ``session``, unless ``reply_gate`` is not set yet (answering-machine detection
        still listening: the keys are recorded, nobody is answered)."""

        def on_dtmf(ev: rtc.SipDTMF) -> None:
            self.push(ev.digit)

        def on_turn(text: str) -> None:
            if reply_gate is not None and not reply_gate.is_set():
                logger.info("caller keys not answered: the call is not open yet")
                return
            session.generate_reply(user_input=text)

        def on_close(_ev: object) -> None:
            room.off("sip_dtmf_received", on_dtmf)
            self.close()

        self._on_turn = on_turn
        room.on("sip_dtmf_received", on_dtmf)
        session.on("close", on_close)

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminator: str | None = None,
        timeout: float = COLLECT_TIMEOUT_SECONDS,
    ) -> tuple[str, str]:
        """Waits for the caller's keys: ``max_digits`` of them, or up to ``terminator``
        (not included), or what came by ``timeout``. Keys the caller typed ahead since the
        last turn count. Returns ``(digits, why)``, ``why`` one of ``max_digits``,
        ``terminator``, ``timeout``."""
        if self._collect is not None:
            raise RuntimeError("already collecting digits")
        collection = _Collection(max_digits, terminator)
        self._cancel_timer()
        typed_ahead, self._pending = self._pending, ""
        self._collect = collection
        try:
            for digit in typed_ahead:
                collection.add(digit)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(collection.done), timeout)
        finally:
            self._collect = None
        why = collection.done.result() if collection.done.done() else "timeout"
        return collection.digits, why

    def close(self) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _event(self, **data: Any) -> None:
        if self._record is None:
            return
        try:
            self._record("dtmf", **data)
        except Exception:
            logger.exception("recording a dtmf event failed")


class _Collection:
    def __init__(self, max_digits: int | None, terminator: str | None) -> None:
        self.max_digits = max_digits
        self.terminator = terminator
        self.digits = ""
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def add(self, digit: str) -> None:
        if self.done.done():
            return
        if self.terminator is not None and digit == self.terminator:
            self.done.set_result("terminator")
            return
        self.digits += digit
        if self.max_digits is not None and len(self.digits) >= self.max_digits:
            self.done.set_result("max_digits")
