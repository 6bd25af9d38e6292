"""An agent's tool list validated into plan entries (``worker.config.tools``)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import ConfigError
from worker.config import parse_tools

# -- parse_tools ------------------------------------------------------------------------


def test_parse_accepts_both_list_shapes_and_spellings() -> None:
    raw = {
        "tools": [
            {
                "name": "lookup_user",
                "description": "Find a customer",
                "input_schema": {"type": "object", "properties": {"phone": {"type": "string"}}},
                "timeoutSeconds": 4,
            },
            {
                "type": "function",
                "function": {
                    "name": "book",
                    "description": "Book a slot",
                    "parameters": {"type": "object", "properties": {}},
                },
                "url": "https://book.example.com/hook",
                "timeout_seconds": 2.5,
            },
            {"type": "transfer_call", "to": "+12015554321"},
            {"builtin": "end_call", "options": {"goodbye": "Bye now."}},
        ]
    }
    lookup, book, transfer, end = parse_tools(raw, tool_url="https://agent.example.com/tools")
    assert lookup.url == "https://agent.example.com/tools" and lookup.timeout_seconds == 4.0
    assert lookup.parameters["properties"] == {"phone": {"type": "string"}}
    assert book.url == "https://book.example.com/hook" and book.timeout_seconds == 2.5
    assert transfer.builtin == "transfer_call" and transfer.options == {"to": "+12015554321"}
    assert transfer.url is None and transfer.name == "transfer_call"
    assert end.options == {"goodbye": "Bye now."}
    assert parse_tools(raw["tools"][:1], tool_url="https://a/t") == (
        parse_tools(raw, tool_url="https://a/t")[0],
    )
    assert parse_tools([], tool_url=None) == ()


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"name": "x y", "url": "https://a"}, "tools[1].name", "letters"),
        ({"name": "t", "url": "https://a", "parameters": {"type": "array"}}, "tools[1].parameters",
         "'t'"),
        ({"name": "t"}, "tools[1].url", "no url"),
        ({"name": "t", "url": "ftp://a"}, "tools[1].url", "http"),
        ({"name": "t", "url": "https://a", "timeoutSeconds": 0}, "tools[1].timeoutSeconds", "(0,"),
        ({"name": "t", "url": "https://a", "timeout_seconds": "5"}, "tools[1].timeout_seconds",
         "number"),
        ({"type": "transfer_call"}, "tools[1].options.to", "E.164"),
        ({"type": "sms"}, "tools[1].type", "unknown"),
        ({"type": "function"}, "tools[1]", "function"),
        ("lookup", "tools[1]", "object"),
        ({"name": "ok", "url": "https://a"}, "tools[1].name", "twice"),
    ],
)  # fmt: skip
def test_parse_names_index_and_field_of_bad_entries(entry: Any, field: str, words: str) -> None:
    good = {"name": "ok", "url": "https://a"}
    with pytest.raises(ConfigError) as info:
        parse_tools([good, entry], tool_url=None)
    assert info.value.field == field
    assert words in str(info.value)


def test_parse_rejects_non_list() -> None:
    with pytest.raises(ConfigError, match="tools"):
        parse_tools({"items": []}, tool_url=None)
