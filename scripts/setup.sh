#!/usr/bin/env bash
# Installs everything voice-worker needs on a fresh Debian machine, idempotently:
# Debian packages (espeak-ng, sox), a venv with the project and its dev extras, and the
# LiveKit server built from the Go module proxy. Builds are cached under .cache/ (the
# llama.cpp wheel in .cache/wheels, the LiveKit binary in .cache/bin, pip's cache in
# .cache/pip) so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIVEKIT_VERSION=v1.13.5
TOXIPROXY_VERSION=v2.12.0
VERSITYGW_VERSION=v1.8.0
LLAMA_VERSION=0.3.36
export PIP_CACHE_DIR="$ROOT/.cache/pip"
mkdir -p .cache/bin .cache/toxiproxy .cache/wheels "$PIP_CACHE_DIR"

log() { printf '\n== %s\n' "$*" >&2; }

# espeak-ng and sox for the offline stack; the phone leg: redis-server, baresip (the far-end
# SIP phone) and the C libraries livekit-sip links (cgo: opus, opusfile, soxr).
DEBS="espeak-ng sox redis-server baresip-core libopus-dev libopusfile-dev libsoxr-dev pkg-config"
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null \
   || ! command -v redis-server >/dev/null || ! command -v baresip >/dev/null \
   || ! pkg-config --exists opus opusfile soxr 2>/dev/null; then
  log "Debian packages: $DEBS"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $DEBS >/dev/null
fi
# `voice-worker talk`'s page: Debian's chromium (its browser test drives it through
# Playwright's executable_path: no browser download) and npm (livekit-client, esbuild).
TALK_DEBS=""
command -v chromium >/dev/null || TALK_DEBS="chromium"
command -v npm >/dev/null || TALK_DEBS="$TALK_DEBS nodejs npm"
if [ -n "$TALK_DEBS" ]; then
  log "Debian packages: $TALK_DEBS"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $TALK_DEBS >/dev/null
fi

# The LiveKit server builds in the background while pip works (2 cores: both fit).
if [ ! -x .cache/bin/server ] && ! command -v livekit-server >/dev/null; then
  command -v go >/dev/null || { echo "Go is required to build livekit-server" >&2; exit 1; }
  log "building livekit-server $LIVEKIT_VERSION (background)"
  (GOBIN="$ROOT/.cache/bin" GOFLAGS=-mod=mod \
     go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_VERSION" \
     > .cache/livekit-build.log 2>&1; echo $? > .cache/livekit-build.rc) &
  LK_PID=$!
fi
# toxiproxy (fault injection between the worker and provider servers), same way. Its
# command is also called "server", hence a GOBIN of its own.
if [ ! -x .cache/toxiproxy/server ]; then
  log "building toxiproxy $TOXIPROXY_VERSION (background)"
  (GOBIN="$ROOT/.cache/toxiproxy" GOFLAGS=-mod=mod \
     go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
     > .cache/toxiproxy-build.log 2>&1; echo $? > .cache/toxiproxy-build.rc) &
  TP_PID=$!
fi

if [ ! -x .venv/bin/python ]; then
  log "virtualenv .venv"
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip

if ! ls .cache/wheels/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  log "building the llama.cpp wheel (llama-cpp-python $LLAMA_VERSION, ~5-12 min, cached)"
  CMAKE_BUILD_PARALLEL_LEVEL=2 \
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
    .venv/bin/pip wheel -q --no-deps -w .cache/wheels "llama-cpp-python==$LLAMA_VERSION"
fi

log "python packages"
.venv/bin/pip install -q --find-links .cache/wheels -e ".[dev]"

if [ -n "${LK_PID:-}" ]; then
  wait "$LK_PID" || true
  if [ "$(cat .cache/livekit-build.rc 2>/dev/null)" != "0" ]; then
    cat .cache/livekit-build.log >&2
    echo "building livekit-server failed (log above)" >&2
    exit 1
  fi
fi
if [ -n "${TP_PID:-}" ]; then
  wait "$TP_PID" || true
  if [ "$(cat .cache/toxiproxy-build.rc 2>/dev/null)" != "0" ]; then
    cat .cache/toxiproxy-build.log >&2
    echo "building toxiproxy failed (log above)" >&2
    exit 1
  fi
fi
if [ ! -x .cache/bin/livekit-sip ]; then
  log "building livekit-sip v1.0.0 (throwaway module: the proxy serves only that exact version)"
  .venv/bin/python -c "from worker.dev.services.sip import build_livekit_sip; build_livekit_sip()"
fi
# The Go caller of `bench capacity` (worker/dev/loadgen, modules pinned by its go.sum; Go's
# build cache under .cache/go-build: ~2.5 min of CPU cold, seconds after).
if [ ! -x .cache/bin/voice-worker-loadgen ]; then
  log "building the Go load generator (worker/dev/loadgen)"
  .venv/bin/python -c "from worker.dev.gocaller import build_loadgen; build_loadgen()"
fi
# Versity's S3 gateway: the call recordings' bucket in tests, replay and the embedded stack.
if [ ! -x .cache/bin/versitygw ]; then
  log "building versitygw $VERSITYGW_VERSION (S3 server for recordings, ~1 min)"
  GOBIN="$ROOT/.cache/bin" GOFLAGS=-mod=mod \
    go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
# The talk page's script: npm ci (lockfile-pinned) and esbuild into .cache/talk, rebuilt only
# when its sources change.
.venv/bin/voice-worker talk --build >/dev/null
log "ready: $(.venv/bin/voice-worker --help >/dev/null && echo voice-worker) $(ls .cache/bin)"
