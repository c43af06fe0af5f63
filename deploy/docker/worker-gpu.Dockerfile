# syntax=docker/dockerfile:1
# lstm-worker streaming worker, GPU (ONNX Runtime CUDA execution provider, no torch).
#
#   docker build -f deploy/docker/worker-gpu.Dockerfile \
#       --build-arg MODEL_BUNDLE=artifacts/bundle --build-arg MODEL_ID="$(deploy/image-tag.sh --model-id artifacts/bundle)" \
#       -t lstm-worker-gpu:"$(deploy/image-tag.sh artifacts/bundle)" .      # e.g. lstm-worker-gpu:0.1.0-news20-m1
#
# Dependencies come from the hashed lock deploy/requirements/worker-gpu.txt (deploy/lock.sh):
# the worker extra with onnxruntime-gpu in place of onnxruntime, installed with
# --require-hashes. onnxruntime-gpu's version is the newest published for Linux x86_64
# CPython 3.11 at the lock date, which may trail the CPU lock's onnxruntime.
#
# Needs a node with an NVIDIA driver for CUDA 12 and the NVIDIA device plugin
# (nvidia.com/gpu). onnxruntime-gpu wheels on PyPI are built for CUDA 12 + cuDNN 9,
# which is what the cudnn-runtime base provides; the CUDA libraries come from the base
# image, not from pip.


FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS build
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's archive only keeps the current build of a package, so apt pins would break
# every rebuild; the base image tag pins the distribution instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/requirements/ deploy/requirements/
# The lock holds onnxruntime-gpu and never the CPU onnxruntime (both ship the `onnxruntime`
# module, so they must never be installed side by side).
RUN pip install --require-hashes --no-deps -r deploy/requirements/worker-gpu.txt
COPY pyproject.toml README.md ./
COPY core/ core/
COPY training/ training/
COPY export/ export/
COPY worker/ worker/
# The project itself, from the context only (--no-index: nothing fetched). `pip check`
# proves the lock satisfies the project's requirements; the worker extra's onnxruntime is
# provided by onnxruntime-gpu (same module), which the import test below checks.
RUN pip install --no-deps --no-build-isolation --no-index . \
    && pip check \
    && python -c "import importlib.metadata as m; assert not any(d.metadata['Name'] == 'onnxruntime' for d in m.distributions()), 'CPU onnxruntime installed'" \
    && python -c "import worker.cli, onnxruntime as ort; import importlib.util as u; assert u.find_spec('torch') is None; assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()"

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS runtime
ARG DEBIAN_FRONTEND=noninteractive
ARG MODEL_BUNDLE=deploy/docker/no-bundle
ARG MODEL_ID=none
LABEL org.opencontainers.image.title="lstm-worker-gpu" \
      org.opencontainers.image.description="Streaming text classification on Kafka with an ONNX LSTM bundle (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.lstm-worker.model="${MODEL_ID}"
# The venv's interpreter is a symlink to /usr/bin/python3.11, so the runtime needs it too.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lstm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin lstm
COPY --from=build /opt/venv /opt/venv
COPY ${MODEL_BUNDLE}/ /models/current/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    LSTM_WORKER_MODEL=/models/current \
    LSTM_WORKER_PROVIDER=cuda \
    LSTM_WORKER_METRICS_PORT=9108 \
    LSTM_WORKER_LOG_FORMAT=json \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LSTM_WORKER_METRICS_PORT', '9108'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["lstm-worker"]
CMD ["run"]
