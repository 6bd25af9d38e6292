"""``transfer_call`` destinations: one ``to`` or a labelled list; errors name the field."""

from __future__ import annotations

import pytest

from pipelines.errors import ConfigError
from worker.config import TransferDestination, parse_tools, pick_destination, transfer_destinations


def test_one_target_needs_no_label_and_no_argument() -> None:
    (plan,) = parse_tools([{"type": "transfer_call", "to": "+12015554321"}], tool_url=None)
    assert plan.parameters == {"type": "object", "properties": {}}
    (only,) = transfer_destinations(plan.options, where="t")
    assert only == TransferDestination("+12015554321") and only.uri == "tel:+12015554321"
    assert pick_destination([only], None) is only


def test_several_destinations_are_picked_by_label() -> None:
    found = transfer_destinations(
        {
            "destinations": [
                {"to": "sip:a@h", "label": "Desk"},
                {"to": "tel:+1555", "label": "Desk 2"},
            ]
        },
        where="t",
    )
    assert pick_destination(found, " desk 2 ") == found[1]
    assert pick_destination(found, None) is None  # several: the LLM must name one
    assert pick_destination(found, "nope") is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"destinations": []}, "tools[0].options.destinations"),
        ({"destinations": [{"to": "12345", "label": "x"}]}, "tools[0].options.destinations[0].to"),
        (
            {"destinations": [{"to": "sip:a@h", "label": "A"}, {"to": "sip:b@h"}]},
            "tools[0].options.destinations[1].label",
        ),
        (
            {"destinations": [{"to": "sip:a@h", "label": "A"}, {"to": "sip:b@h", "label": "a"}]},
            "tools[0].options.destinations[1].label",
        ),
        ({"to": "desk"}, "tools[0].options.to"),
    ],
)
def test_bad_destinations_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tools([{"type": "transfer_call", "options": options}], tool_url=None)
    assert err.value.field == field
