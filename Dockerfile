# syntax=docker/dockerfile:1
# Identity and token sidecar image.
#
#   podman build --format docker -t sidecar .                    # python:3.11-slim base
#   podman build --format docker --build-arg BASE_IMAGE=localhost/sidecar-base:bookworm ...   # CI
#
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
# pip's CA bundle, where a proxy needs one, comes in as a build secret and never
# lands in a layer:  --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# ---- builder: wheels for the package and its pinned dependencies, installed into a venv
FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN --mount=type=secret,id=pip_cert \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip wheel --no-cache-dir --index-url "${PIP_INDEX_URL}" --wheel-dir /wheels '.[pinned]'; \
    /opt/venv/bin/pip install --no-cache-dir --no-index /wheels/*.whl; \
    /opt/venv/bin/pip uninstall --yes pip setuptools; \
    find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +; \
    /opt/venv/bin/python -m compileall -q /opt/venv/lib; \
    /opt/venv/bin/sidecar --version

# ---- final: the interpreter, the venv and nothing else (no compilers, no pip)
FROM ${BASE_IMAGE}
ARG SIDECAR_UID=10001
ARG SIDECAR_GID=10001
LABEL org.opencontainers.image.title="synerise-identity-sidecar" \
      org.opencontainers.image.description="gRPC sidecar: Synerise identity resolution and RS256 JWT signing" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid "${SIDECAR_GID}" sidecar \
 && useradd --no-log-init --uid "${SIDECAR_UID}" --gid "${SIDECAR_GID}" --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin sidecar \
 && mkdir -p /run/sidecar /etc/sidecar/key \
 && chown "${SIDECAR_UID}:${SIDECAR_GID}" /run/sidecar \
 && chmod 0770 /run/sidecar \
 && chmod 0755 /etc/sidecar/key

COPY --from=builder /opt/venv /opt/venv
COPY scripts/container/entrypoint.sh /usr/local/bin/sidecar-entrypoint

# Nothing is written at run time: the image works with a read-only root
# filesystem. The key is mounted read-only at /etc/sidecar/key; the gRPC Unix
# socket lives in /run/sidecar, a volume shared with the app container; TCP is
# loopback only (for probes); metrics listen on all interfaces for scraping.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIDECAR_KEY_FILE=/etc/sidecar/key/private.pem \
    SIDECAR_LISTEN=unix:///run/sidecar/sidecar.sock,127.0.0.1:50051 \
    SIDECAR_METRICS_ADDR=0.0.0.0:9464
VOLUME ["/run/sidecar"]
EXPOSE 9464
USER ${SIDECAR_UID}:${SIDECAR_GID}

STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sidecar", "health", "--timeout", "3"]
ENTRYPOINT ["/usr/local/bin/sidecar-entrypoint"]
CMD ["serve", "--production"]
