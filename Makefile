# The two commands a newcomer needs; each installs what is missing first.
.PHONY: setup demo talk test lint unit integration

setup:
	scripts/setup.sh

demo: setup  ## a real call on the embedded default: local LiveKit, offline providers
	.venv/bin/voice-worker replay --agent agent_01JC0FRNTDESK0000000000000 \
	    --audio fixtures/audio/booking_two_turns.wav --out out/demo

talk: setup  ## talk to the agent from a browser page on loopback (Ctrl-C stops)
	.venv/bin/voice-worker talk

test: setup lint  ## unit tier (seconds) then integration tier (real servers)
	.venv/bin/python -m pytest tests/unit -q -p no:cacheprovider
	.venv/bin/python -m pytest tests/integration -q -p no:cacheprovider

lint:
	.venv/bin/ruff check worker pipelines tests scripts
	.venv/bin/ruff format --check worker pipelines tests scripts
	.venv/bin/mypy --strict worker pipelines
	.venv/bin/lint-imports --no-cache

unit:
	.venv/bin/python -m pytest tests/unit -q

integration:
	.venv/bin/python -m pytest tests/integration -q
