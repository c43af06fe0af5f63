#!/usr/bin/env bash
# The [worker] extra on its own, in a real virtual environment: `pip install '.[worker]'` (no torch), then
# `lstm-worker run --help` and a `classify` of a bundle. tests/test_extras.py proves the same for every
# command and both extras by making the other extra's packages unimportable; this catches what that cannot
# (a dependency missing from pyproject.toml, a file missing from the package). [train] gets no venv here:
# torch is a multi-GB download per fresh environment.
# Usage: scripts/check_extras.sh [BUNDLE]; without BUNDLE it trains and exports a tiny model with .venv
# (make install) on LSTM_TRAIN_DATA, else ../shared/data/20news-bydate.tar.gz.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bundle=${1:-}
if [[ -z $bundle ]]; then
    data=${LSTM_TRAIN_DATA:-../shared/data/20news-bydate.tar.gz}
    .venv/bin/lstm-train --data "$data" --output "$work/checkpoint" --epochs 2 --max-len 64 --embed-dim 32 \
        --hidden-size 32 --vocab-size 5000 --max-train-samples 4000 --val-fraction 0.15 --label-smoothing 0 \
        --distill-weight 0 --no-baseline --seed 0 --device cpu --members 1 --bow-weight 0 >/dev/null
    .venv/bin/lstm-export --checkpoint "$work/checkpoint" --output "$work/bundle" >/dev/null
    bundle=$work/bundle
fi

started=$SECONDS
"$PYTHON" -m venv "$work/worker"
# From a copy of the sources: a build in the checkout leaves build/, whose stale modules a later build would ship.
mkdir "$work/source"
cp -r pyproject.toml README.md core training export worker "$work/source/"
"$work/worker/bin/pip" install --quiet --disable-pip-version-check "$work/source[worker]"
if "$work/worker/bin/python" -c 'import torch' 2>/dev/null; then
    echo "check_extras: torch is installed with [worker] alone" >&2
    exit 1
fi
"$work/worker/bin/lstm-worker" run --help >/dev/null
label=$("$work/worker/bin/lstm-worker" classify --model "$bundle" "the space shuttle launch was delayed")
[[ $label == *'"label"'* ]] || { echo "check_extras: classify wrote no label: $label" >&2; exit 1; }
echo "check_extras: [worker] alone installs, runs run --help and classifies ($((SECONDS - started)) s)"
