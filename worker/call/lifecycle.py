"""What turns a conversation into a production call: pre-call webhook, tools, idle
reprompts and hangup, the post-call report and status webhooks, metrics.

``CallLifecycle`` is created per job by the entrypoint and fed the session's events. It
decides nothing the plan has not decided; it records, delivers and hangs up.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
from livekit.agents import AgentSession, llm
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.metrics.usage import ModelUsage
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    SessionUsageUpdatedEvent,
    UserStateChangedEvent,
)
from pydantic import SecretStr

from pipelines.errors import ConfigError
from pipelines.providers.failover import LayerDown
from worker.call.report import CallRecorder, save_report
from worker.call.tools import ToolCallContext, build_function_tools
from worker.config import (
    PRE_CALL_APPLIED,
    PRE_CALL_IGNORED,
    AgentConfig,
    Dispatch,
    WarmTransferOptions,
    override_dispatch,
)
from worker.metrics import WorkerMetrics, default_metrics
from worker.plan import APOLOGY, GOODBYE, SessionPlan
from worker.settings import Settings
from worker.webhooks import WebhookSender, post_signed

logger = logging.getLogger(__name__)

_session_secrets: dict[str, str] = {}
"""Per-agent webhook secrets seen by this process, for signing spooled reports."""


def webhook_sender(settings: Settings, metrics: WorkerMetrics | None = None) -> WebhookSender:
    """The durable sender; a payload's secret is looked up when it is (re)sent, never
    written to the spool. ``AGENT/HOOK`` keys add that webhook's legacy secret."""
    org = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None

    def secret_for(key: str | None) -> tuple[str, ...]:
        agent, _, hook = (key or "").partition("/")
        own = _session_secrets.get(agent) or org
        legacy = _session_secrets.get(key or "") if hook else None
        return tuple(s for s in (own, legacy) if s)

    return WebhookSender(
        spool_dir=settings.spool_dir,
        secret_for=secret_for,
        max_attempts=settings.webhook_max_attempts,
        timeout=settings.webhook_timeout,
        max_elapsed=settings.webhook_max_elapsed,
        metrics=metrics,
    )


def pre_call_hook(
    settings: Settings, *, call_id: str, room: str, direction: str | None
) -> Callable[[AgentConfig, Dispatch], Awaitable[tuple[Dispatch, str | None]]]:
    """POSTs ``call.pre_call`` (reference ``002_*``) and merges the overrides it returns.
    Timeout, error or an invalid reply: the call goes on with its own config."""

    async def hook(agent: AgentConfig, dispatch: Dispatch) -> tuple[Dispatch, str | None]:
        target = agent.webhooks.pre_call
        if target is None or not target.url:
            return dispatch, None
        # the agent's (or the organization's) secret, and the legacy per-webhook one
        own = agent.webhook_secret or settings.webhook_secret
        secret = tuple(v.get_secret_value() for v in (own, target.secret) if v is not None)
        payload = {
            "type": "call.pre_call",
            "call_id": call_id,
            "session_id": call_id,
            "organization_id": None,
            "direction": direction or dispatch.direction,
            "to": dispatch.dialed_number,
            "from": dispatch.caller_number,
            "dialed_number": dispatch.dialed_number,
            "forwarded_from_number": dispatch.forwarded_from_number,
            "phone_number_id": None,
            "call_control_id": None,
            "room": room,
            "pipeline_config": {},
            "metadata": dispatch.metadata,
        }
        try:
            response = await post_signed(
                target.url,
                payload,
                secret,
                timeout=settings.pre_call_webhook_timeout,
            )
            if response.status_code // 100 != 2:
                return dispatch, f"pre-call webhook answered HTTP {response.status_code}"
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return dispatch, f"pre-call webhook failed: {type(exc).__name__}"
        if not isinstance(body, dict):
            return dispatch, "pre-call webhook reply is not a JSON object"
        try:
            new = override_dispatch(dispatch, body)
        except ConfigError as exc:
            # 002: a bad reply is reported and ignored; the call goes on with its own config
            return dispatch, f"{PRE_CALL_IGNORED}: {exc}"
        return new, PRE_CALL_APPLIED

    return hook


def apply_replacements(text: str, rules: tuple[tuple[str, str], ...]) -> str:
    for find, replace in rules:
        text = re.sub(rf"(?<!\w){re.escape(find)}(?!\w)", replace, text, flags=re.IGNORECASE)
    return text


async def replaced_text(
    text: AsyncIterable[str], rules: tuple[tuple[str, str], ...]
) -> AsyncIterable[str]:
    """Applies whole-word rules to streamed text; holds back the last partial word so a
    rule never misses a word split across chunks."""
    pending = ""
    async for chunk in text:
        pending += chunk
        cut = max(pending.rfind(" "), pending.rfind("\n"))
        if cut >= 0:
            yield apply_replacements(pending[: cut + 1], rules)
            pending = pending[cut + 1 :]
    if pending:
        yield apply_replacements(pending, rules)


class CallLifecycle:
    """Per-call bookkeeping around one ``AgentSession``."""

    def __init__(
        self,
        plan: SessionPlan,
        *,
        settings: Settings,
        call_id: str,
        room_name: str,
        secrets: tuple[str, ...],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.metrics = metrics or default_metrics()
        self.recorder = CallRecorder(
            call_id=call_id,
            agent_id=plan.agent_id,
            session_id=call_id,
            room_name=room_name,
            direction=plan.direction if plan.direction in ("inbound", "outbound", "web") else None,  # type: ignore[arg-type]
            metadata=plan.metadata,
            redact=secrets + settings_secrets(settings),
        )
        self.session: AgentSession[Any] | None = None
        self.end_reason: str | None = None
        self._idle_count = 0
        self._ending = False
        self._last_user: Mapping[str, Any] = {}
        """Metrics of the caller turn the next agent reply answers."""
        self._usage: Sequence[ModelUsage] = ()
        """The session's usage per provider and model, as of its last update."""
        self.final_status: Mapping[str, Any] | None = None
        """The end's ``call.status`` (``status`` and ``status_event`` fields) when the call
        knows better than ``ended`` (a phone call's SIP status); set before ``finish``."""
        self.failed: str | None = None
        """Why the session died of an error (all providers of a layer down), if it did."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.hang_up_phone: Callable[[bool], None] | None = None
        """``hang_up_phone(tail)`` ends a phone call's SIP leg (the phone sees a BYE), set by
        the job: at each decision to end the call, not a second or two later at the session's
        close; ``tail`` lets the last words still on their way reach the phone first."""
        self.secret_key = plan.agent_id or f"call:{call_id}"
        """Names this call's webhook secret for the sender (the spool keeps the name)."""
        if plan.webhook_secret is not None:
            _session_secrets[self.secret_key] = plan.webhook_secret.get_secret_value()
        for name, hook in plan.webhooks.items():
            if hook.secret is not None and hook.secret.get_secret_value():
                # 002: the legacy per-webhook secret still signs, beside the org's
                _session_secrets[self.hook_key(name)] = hook.secret.get_secret_value()

    def hook_key(self, name: str) -> str:
        """The sender's key for one webhook's secrets (``AGENT/HOOK``, see ``webhook_sender``)."""
        return f"{self.secret_key}/{name}"

    # ---------------------------------------------------------------- tools
    def function_tools(
        self,
        http: httpx.AsyncClient,
        *,
        transfer: Callable[[str], Awaitable[None]] | None,
        publish_dtmf: Callable[[int, str], Awaitable[None]] | None,
        collect_digits: Callable[..., Awaitable[tuple[str, str]]] | None = None,
        warm_transfer: Callable[[WarmTransferOptions, str], Awaitable[str | None]] | None = None,
    ) -> list[Any]:
        ctx = ToolCallContext(
            call_id=self.recorder.call_id,
            agent_id=self.plan.agent_id or "",
            metadata=dict(self.plan.metadata),
            hangup=self.hangup,
            transfer=transfer,
            publish_dtmf=publish_dtmf,
            collect_digits=collect_digits,
            record_event=self.recorder.add_event,
            warm_transfer=warm_transfer,
        )
        # the agent's own secret, else the organization's (002: webhooks are signed with it)
        own = self.plan.webhook_secret or self.settings.webhook_secret
        secret = own.get_secret_value() if own else None
        return build_function_tools(self.plan.tools, call_context=ctx, http=http, secret=secret)

    # ---------------------------------------------------------------- session events
    def attach(self, session: AgentSession[Any]) -> None:
        self.session = session
        session.on("conversation_item_added", self._on_item)
        session.on("user_state_changed", self._on_user_state)
        session.on("close", self._on_close)
        session.on("error", self._on_error)
        session.on("session_usage_updated", self._on_usage)
        self.metrics.active_sessions.inc()
        self.metrics.jobs_accepted.inc()

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        self.recorder.add_transcript(item.role, item.text_content or "", at=ev.created_at)
        m = item.metrics
        if item.role == "user":
            self._idle_count = 0
            self._last_user = m
            return
        user = self._last_user
        self._last_user = {}
        turn = {
            "eou": user.get("end_of_turn_delay"),
            "stt": user.get("transcription_delay"),
            "llm_ttft": m.get("llm_node_ttft"),
            "tts_ttfb": m.get("tts_node_ttfb"),
            "first_audio": m.get("e2e_latency"),
        }
        if turn["first_audio"] is not None:
            waited = sum(
                v for k, v in turn.items() if k in ("eou", "llm_ttft", "tts_ttfb") and v is not None
            )
            # What the worker itself added beyond provider waits and the response delay.
            turn["worker"] = max(0.0, turn["first_audio"] - waited)
        self.recorder.add_turn_metrics(at=ev.created_at, **turn)
        for stage, value in turn.items():
            if value is not None:
                self.metrics.observe_turn(stage, value)  # type: ignore[arg-type]

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state != "away" or self._ending or self.session is None:
            return
        reprompts = self.plan.idle_reprompts
        if self._idle_count < len(reprompts):
            self.recorder.add_event("idle_reprompt", count=self._idle_count + 1)
            self.session.say(reprompts[self._idle_count])
            self._idle_count += 1
            # LiveKit keeps a silent caller "away" (no new event) until they speak: back to
            # listening, so the silence after this reprompt is counted again.
            self.session.reset_away_timer()
        else:
            self._spawn(self.hangup(GOODBYE, reason="inactivity"))

    def _on_error(self, ev: ErrorEvent) -> None:
        """A whole layer down (every allowed provider failed): apologise and end now,
        rather than let the caller talk to a pipeline that cannot answer."""
        cause = getattr(ev.error, "error", None)
        if not isinstance(cause, LayerDown) or self._ending:
            return
        down = cause.provider_error
        self.failed = down.message
        self.recorder.add_event(
            "layer_down", layer=down.layer, providers=down.provider, error=down.message
        )
        if down.layer == "tts":
            # Nothing can speak through this session: the entrypoint apologises with the
            # offline TTS after the session closed, if that is allowed.
            self.end_reason = f"provider failure ({down.message})"
            if self.session is not None:
                self.session.shutdown(drain=False)
            return
        self._spawn(self.hangup(APOLOGY, reason=f"provider failure ({down.message})"))

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        # Each event carries the session's running totals; the last one is the call's.
        self._usage = ev.usage.model_usage

    def _record_usage(self) -> None:
        """The call's usage per provider into the report: STT seconds, LLM tokens, TTS
        characters, keyed ``vendor:model`` as LiveKit's metrics name them."""
        for usage in self._usage:
            name = f"{usage.provider}:{usage.model}" if usage.model else usage.provider
            if isinstance(usage, STTModelUsage):
                self.recorder.add_usage(name, stt_seconds=usage.audio_duration)
            elif isinstance(usage, LLMModelUsage):
                self.recorder.add_usage(
                    name,
                    llm_prompt_tokens=usage.input_tokens,
                    llm_completion_tokens=usage.output_tokens,
                )
            elif isinstance(usage, TTSModelUsage):
                self.recorder.add_usage(name, tts_characters=usage.characters_count)

    def _on_close(self, ev: CloseEvent) -> None:
        if ev.error is not None:
            # e.g. every allowed provider of a layer failed: the report says which and why
            inner = getattr(ev.error, "error", ev.error)
            self.failed = f"{type(ev.error).__name__}: {inner}"
            self.recorder.add_event("error", error=self.failed)
            self.end_reason = self.end_reason or f"provider failure ({self.failed})"
        if self.end_reason is None:
            reason = getattr(ev.reason, "value", str(ev.reason))
            self.end_reason = "caller left" if "disconnect" in reason else reason

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def hangup(self, goodbye: str, *, reason: str = "agent ended the call") -> None:
        """Say ``goodbye``, then close the session (which ends the job)."""
        if self._ending or self.session is None:
            return
        self._ending = True
        self.end_reason = self.end_reason or reason
        session = self.session

        async def run() -> None:
            handle = session.say(goodbye, allow_interruptions=False)
            await handle.wait_for_playout()
            self.end_session(session, drain=True, tail=True)

        self._spawn(run())

    def end_session(self, session: AgentSession[Any], *, drain: bool, tail: bool) -> None:
        """The worker ends the call: the phone (if any) is hung up now, the session closed."""
        if self.hang_up_phone is not None:
            self.hang_up_phone(tail)
        session.shutdown(drain=drain)

    def record_switch(
        self, layer: str, from_id: str, to_id: str, reason: str, switch_seconds: float
    ) -> None:
        self.recorder.add_event(
            "failover",
            layer=layer,
            from_provider=from_id,
            to_provider=to_id,
            reason=reason,
            switch_seconds=round(switch_seconds, 3),
        )
        self.metrics.failovers.labels(
            layer=layer, from_provider=from_id, to_provider=to_id, reason=reason
        ).inc()

    async def send_status(
        self, sender: WebhookSender, event_type: str, status: str, **fields: Any
    ) -> bool:
        """Records a ``call.status`` event (fields as ``CallRecorder.status_event``:
        ``sip_status_code``, ``metadata`` ...) and sends it to the agent's status webhook, if
        any, as it happens (spooled first). True when delivered; never raises."""
        event = self.recorder.status_event(event_type, status, **fields)
        hook = self.plan.webhooks.get("status")
        if hook is None:
            return False
        try:
            result = await sender.send(
                hook.url, event.to_payload(), kind="call.status", agent_id=self.hook_key("status")
            )
        except Exception as exc:
            logger.warning("status webhook %s raised %s", event_type, type(exc).__name__)
            return False
        return result.delivered

    # ---------------------------------------------------------------- end of call
    async def finish(self, sender: WebhookSender, *, reason: str | None = None) -> None:
        """Builds the report and delivers it and the final status (spooled first)."""
        self.metrics.active_sessions.dec()
        self._record_usage()
        report = self.recorder.finish(reason or self.end_reason or "ended")
        if self.settings.report_dir is not None:
            save_report(self.settings.report_dir, report)
        hooks = self.plan.webhooks
        deliveries = []
        if "status" in hooks:
            status = self.recorder.status_event(
                "call.hangup", **(self.final_status or {"status": "ended"})
            )
            deliveries.append(
                sender.send(
                    hooks["status"].url,
                    status.to_payload(),
                    kind="call.status",
                    agent_id=self.hook_key("status"),
                )
            )
        if "post_call" in hooks:
            deliveries.append(
                sender.send(
                    hooks["post_call"].url,
                    report.to_payload(),
                    kind="call.report",
                    agent_id=self.hook_key("post_call"),
                )
            )
        for result in await asyncio.gather(*deliveries, return_exceptions=True):
            if isinstance(result, BaseException):
                logger.warning("webhook delivery raised %s", type(result).__name__)
            elif not result.delivered:
                logger.warning("webhook %s %s: left in spool", result.kind, result.outcome)
        for task in self._tasks:
            task.cancel()


def settings_secrets(settings: Settings) -> tuple[str, ...]:
    # every secret setting, so a new vendor's key is redacted without a list to keep up
    values = [getattr(settings, name) for name in type(settings).model_fields]
    return tuple(
        v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()
    )
