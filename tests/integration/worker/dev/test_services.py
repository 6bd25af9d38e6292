"""Real local services: a LiveKit server built from the pinned release and the offline
LLM. A missing binary or wheel fails these tests (``ServiceError``); it never skips."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from livekit import api
from livekit.agents import llm
from livekit.plugins import openai

from worker.dev.services import LiveKitServer, LlamaServer, find_livekit_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def livekit_server() -> Iterator[LiveKitServer]:
    with LiveKitServer() as server:
        yield server


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with LlamaServer() as server:
        yield server


def test_livekit_binary_is_available() -> None:
    assert find_livekit_binary() is not None, "run: python -m worker.dev.services livekit --build"


async def test_livekit_server_creates_and_lists_rooms(livekit_server: LiveKitServer) -> None:
    assert livekit_server.url.startswith("ws://127.0.0.1:")
    lkapi = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    try:
        room = await lkapi.room.create_room(api.CreateRoomRequest(name="services-test"))
        assert room.name == "services-test"
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert "services-test" in {r.name for r in listed.rooms}
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="services-test"))
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert "services-test" not in {r.name for r in listed.rooms}
    finally:
        await lkapi.aclose()


async def test_livekit_server_rejects_a_wrong_secret(livekit_server: LiveKitServer) -> None:
    lkapi = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, "not-the-secret-" * 3)
    try:
        with pytest.raises(api.TwirpError):
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    finally:
        await lkapi.aclose()


def test_livekit_server_stops_and_frees_its_port() -> None:
    server = LiveKitServer()
    with server:
        pid = server.pid
        assert server.running and pid is not None
    assert not server.running
    # Nothing listens any more: a second server can take the same port at once.
    again = LiveKitServer(port=server.port)
    with again:
        assert again.running
    assert again.startup_seconds is not None and again.startup_seconds < 10


async def test_llama_server_answers_a_chat_completion_with_one_sentence(
    llama_server: LlamaServer,
) -> None:
    """Through the OpenAI plugin, as calls use it. The server holds each reply until its
    first sentence ends (the guard replaces an empty or looping one), so it streams one
    sentence, possibly as a single chunk."""
    model = openai.LLM(base_url=llama_server.base_url, api_key="local", model=llama_server.model)
    ctx = llm.ChatContext()
    ctx.add_message(
        role="system",
        content="You are Ember, the receptionist of Bright Smile Dental. Answer briefly.",
    )
    ctx.add_message(role="user", content="Hi, what are your opening hours?")
    pieces: list[str] = []
    started = time.monotonic()
    try:
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    pieces.append(chunk.delta.content)
    finally:
        await model.aclose()
    text = "".join(pieces).strip()
    assert text, "empty completion"
    assert "\n" not in text and "Caller:" not in text, "transcript format must stop at the turn"
    assert time.monotonic() - started < 30
