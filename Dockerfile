# voice-worker image. The steps mirror scripts/setup.sh (which CI runs), so what CI
# exercises is what this image does. Build the offline stack in with
#   docker build --build-arg OFFLINE=1 -t voice-worker .
FROM python:3.11-slim

ARG OFFLINE=0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 WORKER_HTTP_PORT=8081

RUN apt-get update \
 && if [ "$OFFLINE" = "1" ]; then \
      apt-get install -y --no-install-recommends espeak-ng sox build-essential cmake; \
    fi \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY pipelines ./pipelines
COPY fixtures/control_plane ./fixtures/control_plane
RUN if [ "$OFFLINE" = "1" ]; then \
      CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
        pip install ".[offline]"; \
    else \
      pip install .; \
    fi

USER worker
# Health (GET /) and worker info (GET /worker) on the worker's HTTP port; metrics at /metrics.
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"WORKER_HTTP_PORT\"]}/')"
ENTRYPOINT ["voice-worker", "start"]
