"""``voice-worker talk``'s page in a real browser: headless Chromium (Debian's, driven by
Playwright over CDP) joins through the page's token endpoint with a fake microphone that
plays a fixture caller, and the page must show the agent's greeting, the caller's words
as the worker heard them, the agent's reply and that reply's latency, and the agent's
audio must have arrived (the page's WebRTC receiver stats: seconds decoded, energy).

The session's LiveKit server and worker (``tests/integration/conftest.py``) take the call;
the screenshot of the page at the end is kept under the test's tmp dir (path printed)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from livekit import api
from playwright.async_api import Page, async_playwright

from pipelines.audio import Audio, read_wav, write_wav
from worker.call import EVENTS_TOPIC
from worker.dev.replay import resolve_first
from worker.dev.services import LiveKitEndpoint, WorkerProcess
from worker.dev.talk import TalkServer
from worker.plan import APOLOGY
from worker.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "audio" / "manifest.json").read_text())
FRONT_DESK = "agent_01JC0FRNTDESK0000000000000"
SETTER = "agent_01JC0APPTSETTER00000000000"
NOBODY = "talk-test-no-worker"
FIRST_MESSAGE: str = json.loads(
    (FIXTURES / "control_plane" / "agents" / f"{FRONT_DESK}.json").read_text()
)["firstMessage"]

PAUSE = 6.0
"""Seconds of silence around the caller's turn in the fake microphone's loop. Chromium
plays the file from when the page opens the mic, which is before the agent has joined and
greeted (the job may wait for a worker process): a turn said over the greeting or before
the agent listens is lost, as a person's would be, so the caller says it again each
``2 * PAUSE + ~3`` s until the page shows it heard; then the test presses Mute."""
REPLY_WITHIN_MS = 60_000
"""How long the page may take to show the greeting, then the reply (each)."""


def caller_wav(tmp_path: Path) -> Path:
    """The ``one_turn`` fixture caller's turn between ``PAUSE`` s of silence either side
    (16 kHz 16-bit mono: Chromium's fake capture device resamples it; it loops the file)."""
    entry = MANIFEST["one_turn"]
    audio = read_wav(FIXTURES / "audio" / entry["file"])
    turn = entry["turns"][0]
    rate = audio.sample_rate
    speech = audio.samples[int(turn["start"] * rate) : int(turn["end"] * rate)]
    silence = np.zeros(int(PAUSE * rate), dtype=np.float32)
    path = tmp_path / "caller.wav"
    write_wav(path, Audio(np.concatenate([silence, speech, silence]), rate))
    return path


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium not on PATH: scripts/setup.sh installs Debian's chromium"
    return found


async def post_session(client: httpx.AsyncClient, url: str, body: Any) -> httpx.Response:
    return await client.post(url + "session", json=body)


async def lines(page: Page, role: str) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        f'#transcript li[data-role="{role}"][data-final="true"] .text',
        "els => els.map(e => e.textContent)",
    )
    return texts


async def test_session_endpoint_gives_a_room_token_and_dispatches(
    livekit: LiveKitEndpoint,
) -> None:
    """Dispatches to an agent name no worker serves: LiveKit records the dispatch, and the
    session worker's warm processes stay free for the browser call."""
    settings = Settings()
    async with (
        TalkServer(
            livekit,
            NOBODY,
            {"agentId": FRONT_DESK},
            check=lambda md: resolve_first(md, settings),
        ) as talk,
        httpx.AsyncClient() as client,
    ):
        page = await client.get(talk.url)
        assert page.status_code == 200 and 'src="/talk.js"' in page.text
        script = await client.get(talk.url + "talk.js")
        assert script.status_code == 200 and "lk.transcription" in script.text
        config = (await client.get(talk.url + "config")).json()
        assert config["agentId"] == FRONT_DESK
        bad = await post_session(client, talk.url, {"agentId": "no such/agent"})
        assert bad.status_code == 400 and bad.text.startswith("agentId: "), bad.text
        unknown = await post_session(client, talk.url, {"agentId": "agent_nope"})
        assert unknown.status_code == 400 and "agent_nope" in unknown.text, unknown.text
        assert talk.rooms == []
        other = await post_session(client, talk.url, {"agentId": SETTER})
        assert other.status_code == 200 and talk.rooms == [other.json()["room"]]
        resp = await post_session(client, talk.url, {})
        assert resp.status_code == 200
        body = resp.json()
        assert livekit.api_secret not in resp.text
        assert body["eventsTopic"] == EVENTS_TOPIC and body["url"] == livekit.url
        claims = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(body["token"])
        assert claims.video is not None and claims.video.room == body["room"]
        assert claims.video.room_join and not claims.video.room_admin
        lkapi = livekit.client()
        try:
            listed = await lkapi.agent_dispatch.list_dispatch(body["room"])
            picked = await lkapi.agent_dispatch.list_dispatch(other.json()["room"])
            for room in talk.rooms:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
        finally:
            await lkapi.aclose()
        assert [d.agent_name for d in listed if d.agent_name] == [NOBODY]
        assert [json.loads(d.metadata) for d in listed if d.agent_name] == [{"agentId": FRONT_DESK}]
        assert [json.loads(d.metadata) for d in picked if d.agent_name] == [{"agentId": SETTER}]


async def test_browser_call_shows_greeting_reply_and_latency(
    livekit: LiveKitEndpoint, voice_worker: WorkerProcess, tmp_path: Path
) -> None:
    wav = caller_wav(tmp_path)
    shot = tmp_path / "talk.png"
    async with (
        TalkServer(livekit, voice_worker.agent_name, {"agentId": FRONT_DESK}) as talk,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(
            executable_path=chromium(),
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            context = await browser.new_context(
                permissions=["microphone"], viewport={"width": 900, "height": 760}
            )
            page = await context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(talk.url)
            await page.click("#start")
            try:
                await page.wait_for_selector(
                    '#transcript li[data-role="agent"][data-final="true"]',
                    timeout=REPLY_WITHIN_MS,
                )
                await page.wait_for_selector(
                    '#transcript li[data-role="caller"][data-final="true"]',
                    timeout=REPLY_WITHIN_MS,
                )
                await page.click("#mute")  # heard once: the caller waits for the answer
                await page.wait_for_function(
                    "document.querySelectorAll("
                    '\'#transcript li[data-role="agent"][data-final="true"]\').length >= 2'
                    " && document.querySelectorAll('#turns tbody tr').length >= 2",
                    timeout=REPLY_WITHIN_MS,
                )
            finally:
                await page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
                print("\n".join(console[-20:]))
            agent = await lines(page, "agent")
            caller = await lines(page, "caller")
            print(f"agent: {agent}\ncaller: {caller}")
            assert agent[0].strip() == FIRST_MESSAGE
            assert any(t.strip() for t in caller), caller
            assert agent[1].strip() and agent[1].strip() not in (FIRST_MESSAGE, APOLOGY), agent
            order: list[str] = await page.eval_on_selector_all(
                '#transcript li[data-final="true"]', "els => els.map(e => e.dataset.role)"
            )
            assert order.index("caller") < len(order) - 1 - order[::-1].index("agent"), order
            latencies: list[str] = await page.eval_on_selector_all(
                "#turns tbody td.latency", "els => els.map(e => e.textContent)"
            )
            assert any(re.fullmatch(r"\d+\.\d\d s", s) for s in latencies[1:]), latencies
            state = await page.text_content("#agent-state")
            assert state in ("agent: listening", "agent: thinking", "agent: speaking"), state
            stats: dict[str, float] = await page.evaluate("window.talkStats")
            print(f"agent audio: {stats}")
            assert stats["totalSamplesDuration"] > 3.0, stats
            assert stats["totalAudioEnergy"] > 0.0, stats
            assert await page.text_content("#call-state") == f"in room {talk.rooms[0]}"
        finally:
            await browser.close()
