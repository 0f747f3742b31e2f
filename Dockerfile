# syntax=docker/dockerfile:1
#
# ingest: build a virtualenv in one stage, run it from a slim, non-root image.
#
#   docker build -t ingest .
#   docker run --rm ingest config show
#   docker compose up -d            # with TimescaleDB, see docker-compose.yml

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: dependencies, then the package as a wheel, into /opt/venv -----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from pyproject's list alone, so editing the source reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt
# ingest/db/schema is a symlink to ../../schema: copy its target too, so it resolves.
COPY schema ./schema
COPY ingest ./ingest
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INGEST_CONFIG=/app/config/ingest.toml \
    INGEST_SCHEMA_DIR=/app/schema
# A fixed uid so secrets and volumes can be granted to it from the host (10001, not root).
RUN groupadd --system --gid 10001 ingest \
    && useradd --system --uid 10001 --gid ingest --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin ingest
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Settings and migrations are read-only for the service user (owned by root).
COPY config/ ./config/
COPY schema/ ./schema/
# writer.spool_dir (".ingest/spool", relative to WORKDIR) must survive restarts and be writable.
RUN mkdir -p /app/.ingest/spool \
    && chown -R ingest:ingest /app/.ingest
VOLUME ["/app/.ingest/spool"]
USER ingest
# health.port: /healthz, /readyz, /metrics.
EXPOSE 8080
# slim has no curl: ask the health endpoint with the standard library (non-2xx raises, exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# The daemon drains its writers on SIGTERM within writer.shutdown_budget_s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ingest"]
CMD ["run"]
