# syntax=docker/dockerfile:1
# lstm-worker training + export image (PyTorch CPU) for the training Job.
#
#   docker build -f deploy/docker/train.Dockerfile -t lstm-worker-train:0.1.0 .
#
# Runs `lstm-train` then `lstm-export`; see deploy/k8s/training/. It serves nothing:
# the HEALTHCHECK only proves the toolchain imports.

# torch==2.13.0 is pinned in pyproject.toml. PyPI's Linux wheel of that version bundles
# CUDA (gigabytes); the CPU build of the same version (2.13.0+cpu) comes from PyTorch's CPU
# index. Everything is installed from the hashed lock deploy/requirements/train.txt
# (deploy/lock.sh) with --require-hashes, torch's hash included.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/requirements/ deploy/requirements/
# PyPI for everything, PyTorch's CPU index for torch==2.13.0+cpu; the hashes decide what is
# accepted, whichever index served it.
RUN pip install --require-hashes --no-deps --extra-index-url "${TORCH_INDEX_URL}" -r deploy/requirements/train.txt
COPY pyproject.toml README.md ./
COPY core/ core/
COPY training/ training/
COPY export/ export/
COPY worker/ worker/
RUN pip install --no-deps --no-build-isolation --no-index . \
    && pip check \
    && python -c "import torch, training.model; v = torch.__version__; assert v.endswith('+cpu'), v; print('torch', v)"

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="lstm-worker-train" \
      org.opencontainers.image.description="lstm-train and lstm-export (PyTorch CPU) for the training Job" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 lstm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin lstm
COPY --from=build /opt/venv /opt/venv
# Everything the tools write besides /artifacts (scikit-learn's dataset cache,
# matplotlib's config, torch's cache) goes under /tmp, so the root can stay read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    SCIKIT_LEARN_DATA=/tmp/scikit_learn_data \
    TORCH_HOME=/tmp/torch \
    MPLBACKEND=Agg
USER 10001:10001
WORKDIR /tmp
HEALTHCHECK --interval=60s --timeout=30s --retries=1 \
    CMD ["python", "-c", "import torch, onnxruntime"]
ENTRYPOINT ["lstm-train"]
CMD ["--help"]
