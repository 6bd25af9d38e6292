"""Property tests: the config boundary never crashes, plans never leak secrets, routing
never leaves the allowed set."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.errors import ConfigError, RoutingError
from pipelines.providers import Catalog, parse_entry, route
from tests.conftest import CONTROL_PLANE_DIR, make_settings
from worker.config import AgentConfig, parse_agent, parse_dispatch, snake
from worker.plan import plan_to_json, resolve

CATALOG = Catalog.from_json(json.loads((CONTROL_PLANE_DIR / "providers.json").read_text()))
FAST = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# Every documented key in both spellings, plus the nested spellings of the reference docs.
FIELDS = sorted(AgentConfig.model_fields)
KEYS = sorted(
    {k for f in FIELDS for k in (f, camel(f))}
    | {"systemPrompt", "system_prompt", "voice", "intent", "llmOptions", "stackPreferences"}
    | {"constraints", "webhooks", "amd"}
)
assert all(snake(camel(f)) == f for f in FIELDS)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["latency", "custom", "openai", "flux", "agent", "machine-vm", "hangup"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
nested = st.fixed_dictionaries(
    {},
    optional={
        "intent": st.fixed_dictionaries(
            {}, optional={"language": json_values, "optimizeFor": json_values}
        ),
        "llmOptions": st.dictionaries(
            st.sampled_from(["temperature", "maxTokens", "model"]), json_values
        ),
        "stackPreferences": st.fixed_dictionaries(
            {},
            optional={
                "allowedProviders": st.dictionaries(
                    st.sampled_from(["stt", "llm", "tts", "other"]),
                    st.lists(st.text(max_size=10), max_size=3) | json_values,
                )
            },
        ),
        "webhooks": st.dictionaries(
            st.sampled_from(["preCall", "status", "postCall", "post_call"]),
            st.dictionaries(st.sampled_from(["url", "secret"]), json_values) | json_values,
        ),
        "amd": st.dictionaries(
            st.sampled_from(
                [
                    "mode",
                    "timeoutSeconds",
                    "actions",
                    "machine_vm",
                    "machineIvr",
                    "voicemailMessage",
                ]
            ),
            json_values,
        ),
    },
)
agent_dicts = st.builds(
    lambda documented, structured, junk: {**junk, **documented, **structured},
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=10),
    nested,
    st.dictionaries(st.text(max_size=10), json_values, max_size=3),
)


@FAST
@given(agent_dicts)
def test_parse_agent_raises_only_config_error(data: dict[str, Any]) -> None:
    """No config, however wrong, escapes the boundary as anything but ``ConfigError``."""
    try:
        agent = parse_agent(data)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(agent, AgentConfig)


@FAST
@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_parse_agent_rejects_any_non_object_cleanly(data: Any) -> None:
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_agent(data)


secrets_ = st.text(alphabet=string.ascii_letters + string.digits, min_size=16, max_size=32).map(
    lambda s: "S3cr" + s
)


@FAST
@given(
    llm_api_key=secrets_,
    webhook_secret=secrets_,
    hook_secrets=st.lists(secrets_, min_size=3, max_size=3),
    provider_keys=st.lists(secrets_ | st.none(), min_size=3, max_size=3),
    control_plane_key=secrets_,
    optimize_for=st.sampled_from(["latency", "quality", "cost"]),
)
def test_plan_json_never_contains_a_secret(
    llm_api_key: str,
    webhook_secret: str,
    hook_secrets: list[str],
    provider_keys: list[str | None],
    control_plane_key: str,
    optimize_for: str,
) -> None:
    agent = parse_agent(
        {
            "llm_provider": "custom",
            "llm_model": "my-model",
            "llm_base_url": "http://127.0.0.1:8088/v1",
            "llm_api_key": llm_api_key,
            "webhook_url": "https://example.com/legacy",
            "webhook_secret": webhook_secret,
            "webhooks": {
                "preCall": {"url": "https://example.com/pre", "secret": hook_secrets[0]},
                "status": {"url": "https://example.com/status", "secret": hook_secrets[1]},
                "postCall": {"url": "https://example.com/post", "secret": hook_secrets[2]},
            },
            "intent": {"optimizeFor": optimize_for},
        }
    )
    deepgram, openai, eleven = provider_keys
    config = make_settings(
        deepgram_api_key=deepgram,
        openai_api_key=openai,
        eleven_api_key=eleven,
        control_plane_api_key=control_plane_key,
    )
    plan = resolve(agent, None, parse_dispatch({"callId": "c1"}), CATALOG, config)
    text = json.dumps(plan_to_json(plan))
    every = [llm_api_key, webhook_secret, control_plane_key, *hook_secrets]
    every += [k for k in provider_keys if k]
    for secret in every:
        assert secret not in text
    # the plan really carried them: the check above is not vacuous
    assert llm_api_key in plan.secrets and set(hook_secrets) <= set(plan.secrets)


LAYER_IDS = {
    layer: [e.id for e in CATALOG.layer(layer) if e.model != "*"] for layer in ("stt", "tts")
}


@FAST
@given(
    layer=st.sampled_from(["stt", "tts"]),
    data=st.data(),
    optimize_for=st.sampled_from(["latency", "quality", "cost"]),
    unusable_vendors=st.sets(st.sampled_from(["deepgram", "openai", "elevenlabs", "local"])),
)
def test_route_chain_is_exactly_the_allowed_usable_set(
    layer: Any, data: st.DataObject, optimize_for: Any, unusable_vendors: set[str]
) -> None:
    """'Failover stays active within the allowed set' — for any allowlist of catalog
    entries and vendors, the chain is the allowed, usable entries, ranked."""
    ids = LAYER_IDS[layer]
    vendors = sorted({i.split(":")[0] for i in ids})
    allowlist = data.draw(st.lists(st.sampled_from(ids + vendors), max_size=4))
    try:
        r = route(
            layer,
            CATALOG,
            allowlist=allowlist,
            optimize_for=optimize_for,
            language="en",
            unusable=lambda e: "no key" if e.vendor in unusable_vendors else None,
        )
    except RoutingError as exc:
        assert str(exc).startswith(f"{layer}: ")
        return
    allowed = {
        e.id
        for e in CATALOG.layer(layer)
        if e.model != "*"
        and (
            not allowlist
            or any(
                parse_entry(a, layer) in ((e.vendor, None), (e.vendor, e.model)) for a in allowlist
            )
        )
    }
    usable = {i for i in allowed if i.split(":")[0] not in unusable_vendors}
    usable = {i for i in usable if next(e for e in CATALOG.entries if e.id == i).serves("en")}
    assert [e.id for e in r.chain] == sorted(
        usable,
        key=lambda i: (-next(e for e in CATALOG.entries if e.id == i).scores[optimize_for], i),
    )
