# syntax=docker/dockerfile:1
# The scoreboard service as a container image.
#   docker build -t scoreboard .
#   docker run -p 8000:8000 -e SCOREBOARD_JWT_SECRET="$(openssl rand -hex 32)" scoreboard
# It serves on 0.0.0.0, so it refuses to start without a configured key.
# See docs/deploy.md; `deploy/check` lints this file (hadolint).

# Pinned to a patch release; pin the digest too (python:3.12.12-slim-bookworm@sha256:...)
# where reproducible builds matter. Both stages use the same base, so the virtualenv
# built in the first runs unchanged in the second.
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

# ---- build: install the package and its pinned dependencies into a virtualenv ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
# Only what the install needs (.dockerignore keeps everything else out of the context).
# README.md is pyproject.toml's `readme`, so the build needs it.
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# The wheel is what ships and what CI tests (tests/ship/test_wheel.py builds and installs
# it the same way); constraints.txt pins every dependency to the versions CI tested.
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt /wheels/scoreboard-*.whl

# ---- runtime: the virtualenv, a non-root user, nothing else ----
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCOREBOARD_DATA_DIR=/data

# A fixed uid/gid so that volume ownership is the same on every host.
# /data is created and chowned before VOLUME so a new named volume inherits the owner.
RUN groupadd --system --gid 10001 scoreboard \
    && useradd --system --uid 10001 --gid scoreboard --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin scoreboard \
    && install -d -o scoreboard -g scoreboard -m 0700 /data

COPY --from=build /opt/venv /opt/venv

# The embedded SQLite database and the development signing key live here when no
# SCOREBOARD_DATABASE_URL / SCOREBOARD_JWT_SECRET is set.
VOLUME ["/data"]
WORKDIR /data
# Numeric, so that a runtime (e.g. Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001

EXPOSE 8000

# urllib from the standard library, so the image needs no curl: a non-2xx answer or a
# refused connection raises, and the non-zero exit marks the container unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Exec form: uvicorn is PID 1 and gets SIGTERM itself, so `docker stop` is the graceful
# stop (streams ended, queued updates committed; see docs/operations.md).
CMD ["scoreboard", "serve", "--host", "0.0.0.0", "--port", "8000"]
