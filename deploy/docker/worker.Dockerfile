# syntax=docker/dockerfile:1
# lstm-worker streaming worker, CPU (ONNX Runtime CPU provider, no torch).
#
#   docker build -f deploy/docker/worker.Dockerfile -t lstm-worker:0.1.0 .
#   docker build -f deploy/docker/worker.Dockerfile \
#       --build-arg MODEL_BUNDLE=artifacts/bundle -t lstm-worker:0.1.0-news20 .
#
# The build context is the repository root. MODEL_BUNDLE is a bundle directory inside
# it (manifest.json, model.onnx, vocab.json, labels.json) baked in at /models/current;
# without it the image holds a placeholder and expects a volume at /models/current.
# EXTRAS=worker,broker adds the Tansu development broker (used by overlays/dev only).


FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=worker
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The virtual environment is the only thing the runtime stage takes from this stage,
# so compilers, pip caches and the source tree never reach the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core/ core/
COPY training/ training/
COPY export/ export/
COPY worker/ worker/
# Same extras and pins as `make install` (pyproject.toml is the single source of truth);
# `worker` never pulls torch. Non-editable, so /src is not needed at run time.
# Versions are pinned in pyproject.toml, not here, so the image and `make install` cannot drift.
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]" \
    && python -c "import worker.cli, onnxruntime, kafka; import importlib.util as u; assert u.find_spec('torch') is None, 'torch must not be in the worker image'"

FROM python:3.11-slim-bookworm AS runtime
ARG MODEL_BUNDLE=deploy/docker/no-bundle
LABEL org.opencontainers.image.title="lstm-worker" \
      org.opencontainers.image.description="Streaming text classification on Kafka with an ONNX LSTM bundle (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID/GID so Kubernetes can enforce runAsNonRoot without a name lookup.
RUN groupadd --system --gid 10001 lstm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin lstm
COPY --from=build /opt/venv /opt/venv
# Owned by root and read-only for the worker: the model cannot be altered at run time.
COPY ${MODEL_BUNDLE}/ /models/current/
# HOME and TMPDIR point at /tmp, the only writable path (an emptyDir in Kubernetes), so
# the image works with a read-only root filesystem. Bytecode was compiled at install time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    LSTM_WORKER_MODEL=/models/current \
    LSTM_WORKER_PROVIDER=cpu \
    LSTM_WORKER_METRICS_PORT=9108 \
    LSTM_WORKER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
EXPOSE 9108
# No curl in a slim image: the interpreter that runs the worker probes it. urlopen raises
# on connection errors and non-2xx answers, which makes the exit status non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LSTM_WORKER_METRICS_PORT', '9108'), timeout=4)"]
# SIGTERM (docker stop, pod deletion) drains the in-flight batch, commits and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lstm-worker"]
CMD ["run"]
