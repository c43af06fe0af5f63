# syntax=docker/dockerfile:1
# lstm-worker streaming worker, CPU (ONNX Runtime CPU provider, no torch).
#
#   docker build -f deploy/docker/worker.Dockerfile \
#       --build-arg MODEL_BUNDLE=artifacts/bundle --build-arg MODEL_ID="$(deploy/image-tag.sh --model-id artifacts/bundle)" \
#       -t lstm-worker:"$(deploy/image-tag.sh artifacts/bundle)" .          # e.g. lstm-worker:0.1.0-news20-m1
#   docker build -f deploy/docker/worker.Dockerfile -t lstm-worker:"$(deploy/image-tag.sh)" .   # 0.1.0-nomodel
#
# The build context is the repository root. MODEL_BUNDLE is a bundle directory inside
# it (manifest.json, model.onnx, vocab.json, labels.json) baked in at /models/current;
# without it the image holds a placeholder and expects a volume at /models/current.
# The tag names what the image carries: <version>-<model name>-m<model version>, or
# <version>-nomodel (deploy/image-tag.sh; docs/deploy.md, "Image tags").
# EXTRAS=worker,broker adds the Tansu development broker (used by overlays/dev only).
# Dependencies come from the hashed lock deploy/requirements/<EXTRAS with - for ,>.txt
# (deploy/lock.sh), installed with --require-hashes: nothing unpinned or unverified.


FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=worker
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The virtual environment is the only thing the runtime stage takes from this stage,
# so compilers, pip caches and the source tree never reach the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/requirements/ deploy/requirements/
# The dependencies first, from the lock alone (every file checked against its sha256), so
# this layer is cached until the lock changes; `worker` never pulls torch.
RUN LOCK="deploy/requirements/$(echo "${EXTRAS}" | tr ',' '-').txt" \
    && pip install --require-hashes --no-deps -r "${LOCK}"
COPY pyproject.toml README.md ./
COPY core/ core/
COPY training/ training/
COPY export/ export/
COPY worker/ worker/
# Then the project itself, from the context only (--no-index: nothing fetched; setuptools
# came from the lock). Non-editable, so /src is not needed at run time. pip check proves
# the lock satisfies pyproject.toml's requirements.
RUN pip install --no-deps --no-build-isolation --no-index . \
    && pip check \
    && python -c "import worker.cli, onnxruntime, kafka; import importlib.util as u; assert u.find_spec('torch') is None, 'torch must not be in the worker image'"

FROM python:3.11-slim-bookworm AS runtime
ARG MODEL_BUNDLE=deploy/docker/no-bundle
ARG MODEL_ID=none
LABEL org.opencontainers.image.title="lstm-worker" \
      org.opencontainers.image.description="Streaming text classification on Kafka with an ONNX LSTM bundle (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.lstm-worker.model="${MODEL_ID}"
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
