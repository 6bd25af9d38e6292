from worker.dev.agents import FRONT_DESK_ID, scripted_front_desk


def test_the_scripted_front_desk_runs_offline_on_the_given_llm_without_a_noise_bed() -> None:
    record = scripted_front_desk("http://127.0.0.1:5000", save_audio_recording=True)
    assert record["id"] == FRONT_DESK_ID
    assert record["llm_base_url"] == "http://127.0.0.1:5000/v1"
    assert record["stackPreferences"]["allowedProviders"]["stt"] == ["local"]
    assert not [k for k in record if k.startswith("background")]
    assert record["save_audio_recording"] is True
    assert "postCall" in record["webhooks"]  # the control plane's own, kept


def test_given_webhooks_replace_the_records() -> None:
    record = scripted_front_desk("http://llm", {"status": "http://hooks/status"})
    assert record["webhooks"] == {"status": {"url": "http://hooks/status"}}
