from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import ConfigError
from worker.config import WarmTransferOptions, parse_tools, parse_warm_transfer

OPTIONS: dict[str, Any] = {
    "trunkId": "ST_main",
    "from": "+12015550199",
    "destinations": [
        {"to": "+12015551234", "label": "Front desk"},
        {"to": "sip:overflow@pbx.example.com", "trunkId": "ST_pbx"},
    ],
    "screeningPrompt": "Confirm the recipient can help before bridging.",
    "fallback": {"strategy": "take_message"},
    "ringingTimeout": 25,
}


def test_destinations_take_the_tool_trunk_unless_they_name_one() -> None:
    warm = parse_warm_transfer(OPTIONS, where="tools[0]")
    assert [(d.to, d.label, d.trunk_id) for d in warm.destinations] == [
        ("+12015551234", "Front desk", "ST_main"),
        ("sip:overflow@pbx.example.com", "sip:overflow@pbx.example.com", "ST_pbx"),
    ]
    assert warm.from_number == "+12015550199"
    assert warm.ringing_timeout == 25.0
    assert warm.accept_timeout == 15.0 and warm.hold_audio == "music"
    # the plan keeps the plain-JSON form, and it reads back to the same options
    assert parse_warm_transfer(warm.to_options(), where="x") == warm


def test_snake_case_spellings_and_defaults() -> None:
    warm = parse_warm_transfer(
        {"trunk_id": "ST_1", "destinations": [{"to": "desk"}], "hold_audio": "silence"},
        where="t",
    )
    assert (
        warm == WarmTransferOptions(destinations=warm.destinations, hold_audio="silence")
        and warm.destinations[0].trunk_id == "ST_1"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"destinations": []}, "tools[0].options.destinations"),
        ({"destinations": [{"to": "not a number!"}]}, "tools[0].options.destinations[0].to"),
        ({"trunkId": None}, "tools[0].options.destinations[0].trunkId"),
        ({"fallback": {"strategy": "voicemail"}}, "tools[0].options.fallback.strategy"),
        ({"ringingTimeout": 0}, "tools[0].options.ringingTimeout"),
        ({"acceptTimeout": "soon"}, "tools[0].options.acceptTimeout"),
        ({"holdAudio": "jazz"}, "tools[0].options.holdAudio"),
        ({"screeningPrompt": "  "}, "tools[0].options.screeningPrompt"),
    ],
)
def test_bad_options_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_warm_transfer({**OPTIONS, **change}, where="tools[0]")
    assert err.value.field == field


def test_the_builtin_carries_validated_options() -> None:
    (plan,) = parse_tools([{"type": "warm_transfer", "options": OPTIONS}], tool_url=None)
    assert plan.builtin == "warm_transfer" and plan.name == "warm_transfer"
    assert plan.options["destinations"][1]["trunkId"] == "ST_pbx"
    assert "summary" in plan.parameters["properties"]
    with pytest.raises(ConfigError) as err:
        parse_tools([{"type": "warm_transfer"}], tool_url=None)
    assert err.value.field == "tools[0].options.destinations"
