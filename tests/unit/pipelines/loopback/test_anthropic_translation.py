"""The Anthropic server's translation of a Messages request to the chat completion that
its OpenAI-compatible upstream (the offline llama.cpp server) answers."""

from __future__ import annotations

from pipelines.loopback.vendors.anthropic import to_chat_completion


def test_system_tools_tool_use_and_results_translate() -> None:
    chat = to_chat_completion(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "temperature": 0.2,
            "system": [{"type": "text", "text": "Be terse."}],
            "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "lookup"},
            "messages": [
                {"role": "user", "content": "Where is A-17?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"id": "A-17"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "shipped"}],
                },
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Where is A-17?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"id": "A-17"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "shipped"},
    ]
    assert chat["max_tokens"] == 64 and chat["temperature"] == 0.2 and chat["stream"] is True
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
